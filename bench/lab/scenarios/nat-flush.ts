// The NAT forgets every flow at once (conntrack -F, with tcp_loose 0: old flows blackhole). The
// sessions of every relay sit idle, the NAT is flushed, and each session is checked at once with
// one echo round trip that may wait up to the window: how long from the flush until each flows
// again, or whether it ever does (closed by its relay, or silence).

import { sleep } from '../exec.ts'
import type { Outcome, Workbench } from './workbench.ts'
import { tally } from './workbench.ts'
import type { CheckedOutcome } from './data-timeout.ts'

export interface FlushOutcome extends CheckedOutcome {
  /** Seconds from the flush until each surviving session's echo came back, sorted. */
  recovered: number[]
}

/** Idle `idleSeconds`, flush, check every session (waiting up to `windowSeconds`); times are since the flush. */
export async function natFlush(wb: Workbench, idleSeconds: number, windowSeconds: number): Promise<FlushOutcome[]> {
  const deployed = await wb.deploy('flush', undefined, true)
  try {
    await sleep(idleSeconds * 1000)
    await wb.lab.faults.flushNat()
    const flushed = Date.now()
    const checked = await Promise.all(deployed.map(d => Promise.all(d.sessionGroups.map(async group => {
      const [entry] = Object.entries(await wb.driver.ping(group, windowSeconds * 1000))
      return entry === undefined ? null : { tag: entry[0], result: entry[1], after: (Date.now() - flushed) / 1000 }
    }))))
    const window = (Date.now() - flushed) / 1000
    return await Promise.all(deployed.map(async (d, i): Promise<FlushOutcome> => {
      const checks = (checked[i] ?? []).filter(c => c !== null)
      const closes = new Map(wb.driver.closes(d.group).map(c => [c.tag, c]))
      const ends = checks.filter(c => c.result !== 'ok').map(c => {
        const closed = closes.get(c.tag)
        return closed === undefined ? c.after : (closed.t - flushed) / 1000
      })
      const outcome: Outcome = await wb.outcome(d, ends, window, tally([...closes.values()].map(c => c.how)))
      const ok = checks.filter(c => c.result === 'ok')
      return { ...outcome, survived: ok.length, recovered: ok.map(c => c.after).sort((a, b) => a - b) }
    }))
  } finally {
    await wb.withdraw(deployed)
  }
}
