// A box on the path that times out on data only (bench/lab/box.ts): every relay's sessions go
// through it, stay idle for longer than the box's timeout, and are then checked with one echo
// round trip each. Keepalive cannot help here (the box's kernel answers the probes); data can.

import { sleep } from '../exec.ts'
import type { DataTimeoutBox } from '../box.ts'
import type { Outcome, Workbench } from './workbench.ts'
import { tally } from './workbench.ts'

export interface CheckedOutcome extends Outcome {
  /** Sessions whose check came back exact. */
  survived: number
}

/** Sessions of every relay through `box`, idle `idleSeconds`, then checked; ends are seconds since they went idle. */
export async function dataTimeout(wb: Workbench, box: DataTimeoutBox, idleSeconds: number, pingTimeoutMs = 3000): Promise<CheckedOutcome[]> {
  const deployed = await wb.deploy('box', undefined, false, box.path)
  try {
    const start = Date.now()
    await sleep(idleSeconds * 1000)
    const results = await Promise.all(deployed.map(d => wb.driver.ping(d.group, pingTimeoutMs)))
    const window = (Date.now() - start) / 1000
    return await Promise.all(deployed.map(async (d, i) => {
      const checks = results[i] ?? {}
      const closes = new Map(wb.driver.closes(d.group).map(c => [c.tag, c]))
      const ends = Object.entries(checks).filter(([, r]) => r !== 'ok').map(([tag]) => {
        const closed = closes.get(tag)
        return closed === undefined ? window : (closed.t - start) / 1000
      })
      const outcome = await wb.outcome(d, ends, window, tally([...closes.values()].map(c => c.how)))
      return { ...outcome, survived: Object.values(checks).filter(r => r === 'ok').length }
    }))
  } finally {
    await wb.withdraw(deployed)
  }
}
