// Each relay's own upgrade: with sessions open through it, the relay upgrades or restarts itself
// the way its operators do (Relay.upgradeHow: ka-proxy SIGUSR2, HAProxy's reload with -sf,
// nginx's binary upgrade, a socat restart); `waitSeconds` after the upgrade began, every session
// is checked by one echo round trip, and one new session is opened. Until then each session
// echoes every third of the NAT's timeout, as a live app would: a flow left idle longer would be
// forgotten by the NAT whatever the upgrade did (nginx's target leg has no keepalive of its own).
// Sessions the relay closed end when the app saw the close; silent ones at the first echo that
// did not come back.

import type { PingResult } from '../clients.ts'
import { sleep } from '../exec.ts'
import type { Outcome, Workbench } from './workbench.ts'
import { tally } from './workbench.ts'

export interface UpgradeOutcome extends Outcome {
  /** What the relay did (Relay.upgradeHow). */
  how: string
  /** Sessions that still answered `waitSeconds` after. */
  working: number
  /** Whether a session opened after the upgrade answered. */
  newSession: boolean
  /** Seconds from the start of the upgrade until the new generation served. */
  upgradeSeconds: number
  /** Whether a process of the old generation still ran at the check (the sessions may be its). */
  oldRunning: boolean
  /** Why the upgrade itself failed, if it did. */
  error?: string
}

export async function ownUpgrade(wb: Workbench, waitSeconds: number, pingTimeoutMs = 3000): Promise<UpgradeOutcome[]> {
  const deployed = await wb.deploy('upgrade', e => e.relay.upgradeHow !== undefined)
  const fresh = (group: string): string => `${group}-new`
  try {
    const at = Date.now()
    const upgraded = await Promise.all(deployed.map(async d => {
      try {
        await d.running.upgrade!()
        return { seconds: (Date.now() - at) / 1000 }
      } catch (err) {
        return { seconds: (Date.now() - at) / 1000, error: (err as Error).message.split('\n')[0] }
      }
    }))
    const deadline = at + waitSeconds * 1000
    const every = Math.max(1000, (wb.lab.natTimeout * 1000) / 3)
    const silentSince = new Map<string, number>()
    let checks: Array<Record<string, PingResult>> = []
    for (;;) {
      await sleep(Math.max(0, Math.min(every, deadline - Date.now())))
      const sent = (Date.now() - at) / 1000
      checks = await Promise.all(deployed.map(d => wb.driver.ping(d.group, pingTimeoutMs)))
      for (const [tag, r] of checks.flatMap(c => Object.entries(c))) if (r === 'timeout' && !silentSince.has(tag)) silentSince.set(tag, sent)
      if (Date.now() >= deadline) break
    }
    const window = (Date.now() - at) / 1000
    const oldRunning = deployed.map(d => d.running.oldGenerationRunning?.() ?? false)
    const opened = await Promise.all(deployed.map(d => wb.driver.open(fresh(d.group), d.running.address, 1).catch(() => 0)))
    return await Promise.all(deployed.map(async (d, i) => {
      const closes = wb.driver.closes(d.group)
      const closedTags = new Set(closes.map(c => c.tag))
      // Dead at the last check without a close: since its first echo that did not come back.
      const silent = Object.entries(checks[i] ?? {}).filter(([tag, r]) => r !== 'ok' && !closedTags.has(tag)).map(([tag]) => tag)
      const ends = [...closes.map(c => (c.t - at) / 1000), ...silent.map(tag => silentSince.get(tag) ?? window)]
      const outcome = await wb.outcome(d, ends, window, tally(closes.map(c => c.how)))
      const u = upgraded[i] as { seconds: number, error?: string }
      return {
        ...outcome,
        how: d.relay.upgradeHow!(d.options),
        working: Object.values(checks[i] ?? {}).filter(r => r === 'ok').length,
        newSession: opened[i] === 1,
        upgradeSeconds: u.seconds,
        oldRunning: oldRunning[i] ?? false,
        ...(u.error === undefined ? {} : { error: u.error })
      }
    }))
  } finally {
    for (const d of deployed) await wb.driver.destroy(fresh(d.group))
    await wb.withdraw(deployed)
  }
}
