// Survival: open sessions through every relay, give each session of a relay an idle time of its
// own, and check each one once, with one echo round trip, after its idle time. Alive: the echo
// came back. Each relay gets the same idle times, so its checks draw a curve, the fraction alive
// against seconds idle: a session that died silently at the NAT's timeout shows as dead from
// there on, instead of only being found dead at the end.
//
// Idle is counted from the moment every session of the run had opened (opening them all takes
// well under a second), to the moment its check was sent.

import type { PingResult } from '../clients.ts'
import { sleep } from '../exec.ts'
import type { Deployed, Outcome, Workbench } from './workbench.ts'
import { tally } from './workbench.ts'

/** One session's check. */
export interface IdleCheck {
  /** Seconds the session had been idle when the check was sent. */
  idle: number
  /** "ok": the echo came back; "timeout": silence; "closed": the relay or server had closed it. */
  result: PingResult
}

export interface SurvivalOutcome extends Outcome {
  survived: number
  /** The longest idle time asked for. */
  idleMax: number
  /** Every opened session's check, shortest idle first. */
  checks: IdleCheck[]
}

/**
 * Checks session i of every relay after `idleTimes[i]` seconds (one entry per session; the
 * workbench's session count must match). A check waits `pingTimeoutMs` for its echo.
 */
export async function survival(wb: Workbench, idleTimes: readonly number[], pingTimeoutMs = 3000): Promise<SurvivalOutcome[]> {
  if (idleTimes.length !== wb.sessions) throw new RangeError(`survival: ${idleTimes.length} idle times for ${wb.sessions} sessions`)
  const deployed = await wb.deploy('idle', undefined, true)
  try {
    const start = Date.now()
    const checked = await Promise.all(deployed.map(d => checkEach(wb, d, idleTimes, start, pingTimeoutMs)))
    const window = (Date.now() - start) / 1000
    return await Promise.all(deployed.map(async (d, i) => {
      const checks = checked[i] ?? []
      const closes = new Map(wb.driver.closes(d.group).map(c => [c.tag, c]))
      // A session the relay closed ended when it closed; a silent one when its check found it dead.
      const ends = checks.filter(c => c.result !== 'ok').map(c => {
        const closed = closes.get(c.tag)
        return closed === undefined ? c.idle : Math.min(c.idle, (closed.t - start) / 1000)
      })
      const outcome = await wb.outcome(d, ends, window, tally([...closes.values()].map(c => c.how)))
      return {
        ...outcome,
        survived: checks.filter(c => c.result === 'ok').length,
        idleMax: Math.max(...idleTimes),
        checks: checks.map(({ idle, result }) => ({ idle, result }))
      }
    }))
  } finally {
    await wb.withdraw(deployed)
  }
}

/** Sleeps until each session's idle time is up, then checks it; sessions that did not open are left out. */
async function checkEach(wb: Workbench, d: Deployed, idleTimes: readonly number[], start: number, pingTimeoutMs: number): Promise<Array<IdleCheck & { tag: string }>> {
  const checks = await Promise.all(d.sessionGroups.map(async (group, i) => {
    await sleep(Math.max(0, start + (idleTimes[i] as number) * 1000 - Date.now()))
    const idle = (Date.now() - start) / 1000
    const [entry] = Object.entries(await wb.driver.ping(group, pingTimeoutMs))
    return entry === undefined ? null : { tag: entry[0], idle, result: entry[1] }
  }))
  return checks.filter(c => c !== null).sort((a, b) => a.idle - b.idle)
}
