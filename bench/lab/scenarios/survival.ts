// Survival: open sessions through every relay, leave them idle (longer than the NAT keeps an
// idle flow), then check each with one echo round trip. A session survived if the echo came
// back; a relay that keeps the NAT entry alive with keepalive should keep them all.

import { sleep } from '../exec.ts'
import type { Outcome, Workbench } from './workbench.ts'
import { tally } from './workbench.ts'

export interface SurvivalOutcome extends Outcome {
  survived: number
  idleSeconds: number
}

export async function survival(wb: Workbench, idleSeconds: number, pingTimeoutMs = 3000): Promise<SurvivalOutcome[]> {
  const deployed = await wb.deploy('idle')
  try {
    const start = Date.now()
    await sleep(idleSeconds * 1000)
    const checkedAt = (Date.now() - start) / 1000
    const checks = await Promise.all(deployed.map(d => wb.driver.ping(d.group, pingTimeoutMs)))
    const window = (Date.now() - start) / 1000
    return await Promise.all(deployed.map(async (d, i) => {
      const results = checks[i] ?? {}
      const closes = new Map(wb.driver.closes(d.group).map(c => [c.tag, c]))
      const ends = Object.entries(results)
        .filter(([, result]) => result !== 'ok')
        // A session the relay closed ended when it closed; a silent one when the check found it dead.
        .map(([tag]) => {
          const closed = closes.get(tag)
          return closed === undefined ? checkedAt : (closed.t - start) / 1000
        })
      const outcome = await wb.outcome(d, ends, window, tally([...closes.values()].map(c => c.how)))
      return { ...outcome, survived: Object.values(results).filter(r => r === 'ok').length, idleSeconds }
    }))
  } finally {
    await wb.withdraw(deployed)
  }
}
