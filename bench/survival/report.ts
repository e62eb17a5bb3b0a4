// The result of one bench run, as written to JSON: settings, machine, and per relay what each
// scenario measured. Session logs are reduced to a count per close reason.

import { release } from 'node:os'
import type { FlushOutcome, Outcome, RelayOptions, SurvivalOutcome, UpgradeOutcome } from '../lab/index.ts'
import type { BenchSettings, ScenarioName } from './options.ts'

export type OutcomeSummary = Omit<Outcome, 'sessionLog'> & {
  /** ka-proxy's "session closed" log lines, counted by reason. */
  logReasons: Record<string, number> | null
}

export interface RelayReport {
  relay: string
  /** Why the relay was left out (not installed, ...). */
  skipped?: string
  options?: RelayOptions
  results: Partial<Record<ScenarioName, OutcomeSummary & Partial<Pick<SurvivalOutcome, 'survived' | 'idleMax' | 'checks'>>
    & Partial<Pick<UpgradeOutcome, 'how' | 'working' | 'newSession' | 'upgradeSeconds' | 'oldRunning' | 'error'>>
    & Partial<Pick<FlushOutcome, 'recovered'>>>>
}

export interface Report {
  startedAt: string
  settings: BenchSettings
  /** TCP_USER_TIMEOUT as applied, spelled out: an unset option would vanish from the JSON. */
  userTimeout: { kaProxy: number | 'default (idle + interval × count)', peers: number | 'none' }
  machine: { kernel: string, node: string }
  relays: RelayReport[]
}

export function newReport(settings: BenchSettings): Report {
  return {
    startedAt: new Date().toISOString(),
    settings,
    userTimeout: { kaProxy: settings.userTimeout ?? 'default (idle + interval × count)', peers: settings.peerUserTimeout ?? 'none' },
    machine: { kernel: release(), node: process.version },
    relays: []
  }
}

export function summarize<T extends Outcome>(outcome: T): Omit<T, 'sessionLog'> & { logReasons: Record<string, number> | null } {
  const { sessionLog, ...rest } = outcome
  if (sessionLog === null) return { ...rest, logReasons: null }
  const logReasons: Record<string, number> = {}
  for (const line of sessionLog) {
    const reason = String(line.reason)
    logReasons[reason] = (logReasons[reason] ?? 0) + 1
  }
  return { ...rest, logReasons }
}
