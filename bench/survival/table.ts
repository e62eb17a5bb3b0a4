// The report as a table for people: one row per relay, a column per question of the bench.
// Written in Markdown table syntax, so it reads in a terminal and pastes into a note as is.

import type { Report, RelayReport, OutcomeSummary } from './report.ts'
import { firstDeath } from './curve.ts'

function seconds(s: number): string {
  return s.toFixed(1)
}

/** "11.0–11.1 s" for the sessions that were closed, with a count when not all were. */
function detection(o: OutcomeSummary | undefined): string {
  if (o === undefined) return 'n/a'
  const ends = o.ends
  if (ends.length === 0) return `none in ${Math.round(o.window)} s`
  const first = ends[0] as number
  const last = ends[ends.length - 1] as number
  const range = seconds(first) === seconds(last) ? `${seconds(first)} s` : `${seconds(first)}–${seconds(last)} s`
  return ends.length === o.sessions ? range : `${range} (${ends.length}/${o.sessions})`
}

/** "RST", "FIN", or a mix such as "FIN 30, RST 20"; "–" when nobody was told anything. */
function peerSaw(o: OutcomeSummary | undefined): string {
  if (o === undefined) return 'n/a'
  const entries = Object.entries(o.peerSaw)
  if (entries.length === 0) return '–'
  if (entries.length === 1) return (entries[0] as [string, number])[0].toUpperCase()
  return entries.map(([how, n]) => `${how.toUpperCase()} ${n}`).join(', ')
}

/** Of the sessions checked after more than T idle, how many still answered. */
function survivedPastT(r: RelayReport, natTimeout: number): string {
  const o = r.results.survival
  if (o?.checks === undefined) return 'n/a'
  const past = o.checks.filter(c => c.idle > natTimeout)
  if (past.length === 0) return `none idle > ${natTimeout} s`
  const alive = past.filter(c => c.result === 'ok').length
  return `${alive}/${past.length} (${Math.round(100 * alive / past.length)} %)`
}

/** Where the curve drops: "14.4–15.3 s" between the last session alive and the first dead. */
function measuredT(r: RelayReport): string {
  const o = r.results.survival
  if (o?.checks === undefined) return 'n/a'
  const death = firstDeath(o.checks)
  if (death === null) return `none died in ${Math.round(o.idleMax ?? o.window)} s`
  const range = `${seconds(death.lastAlive)}–${seconds(death.firstDead)} s`
  return death.aliveAfter === 0 ? range : `${range} (${death.aliveAfter} alive later)`
}

function perFault(r: RelayReport, cell: (o: OutcomeSummary | undefined) => string): string {
  return [r.results.blackhole, r.results.inflight, r.results.vanish].map(cell).join(' / ')
}

/** "50/50", or "0/50, closed 10.0 s, RST"; ", old process still holds them" while the old generation runs. */
function upgradeWorking(r: RelayReport): string {
  const o = r.results.upgrade
  if (o?.working === undefined) return 'n/a'
  const parts = [`${o.working}/${o.sessions}`]
  if (o.error !== undefined) parts.push(`upgrade failed: ${o.error}`)
  if (o.ends.length > 0) parts.push(`closed ${detection(o).replace(/ \(\d+\/\d+\)$/, '')}, ${peerSaw(o)}`)
  if (o.oldRunning === true && o.working > 0) parts.push('old process still holds them')
  return parts.join(', ')
}

function upgradeNewSession(r: RelayReport): string {
  const o = r.results.upgrade
  if (o?.newSession === undefined) return 'n/a'
  return o.newSession ? 'yes' : 'no'
}

/** "5/5", or "0/5, closed 6.0 s, FIN": the sessions that came through the box alive. */
function throughBox(r: RelayReport): string {
  const o = r.results.box
  if (o?.survived === undefined) return 'n/a'
  const parts = [`${o.survived}/${o.sessions}`]
  if (o.ends.length > 0 && Object.keys(o.peerSaw).length > 0) parts.push(`closed ${detection(o).replace(/ \(\d+\/\d+\)$/, '')}, ${peerSaw(o)}`)
  return parts.join(', ')
}

/** "50/50 flowing again 2.1–3.4 s", or "0/50, closed 3.0 s, RST", or "0/50, silent". */
function afterFlush(r: RelayReport): string {
  const o = r.results.flush
  if (o?.survived === undefined) return 'n/a'
  const recovered = o.recovered ?? []
  const parts = [`${o.survived}/${o.sessions}`]
  if (recovered.length > 0) {
    const first = recovered[0] as number
    const last = recovered[recovered.length - 1] as number
    parts[0] += ` flowing again ${seconds(first) === seconds(last) ? seconds(first) : `${seconds(first)}–${seconds(last)}`} s`
  }
  if (o.ends.length > 0) parts.push(Object.keys(o.peerSaw).length > 0 ? `closed ${detection(o).replace(/ \(\d+\/\d+\)$/, '')}, ${peerSaw(o)}` : 'silent')
  return parts.join(', ')
}

function socketsLeft(o: OutcomeSummary | undefined): string {
  return o?.socketsLeft === null || o?.socketsLeft === undefined ? '–' : String(o.socketsLeft)
}

/** Columns; the measured T sits next to the configured one. */
const headers = (natTimeout: number, upgradeWait: number, box: string): string[] => [
  'relay',
  'survived idle > T',
  `measured T (configured ${natTimeout} s)`,
  'blackhole, idle: client leg closed after',
  'blackhole, data in flight',
  'client vanishes: target leg closed after',
  'peer saw (idle / in flight / vanish)',
  'sockets left (idle / in flight / vanish)',
  `own upgrade: working ${upgradeWait} s after`,
  'own upgrade: new session',
  box,
  'NAT flushed: alive'
]

export function renderTable(report: Report): string {
  const T = report.settings.natTimeout
  const s = report.settings
  const head = headers(T, s.upgradeWait, `box (${s.boxTimeout} s on data): alive after ${s.boxIdle} s idle`)
  const rows = report.relays.filter(r => r.skipped === undefined).map(r => [
    r.relay,
    survivedPastT(r, T),
    measuredT(r),
    detection(r.results.blackhole),
    detection(r.results.inflight),
    detection(r.results.vanish),
    perFault(r, peerSaw),
    perFault(r, socketsLeft),
    upgradeWorking(r),
    upgradeNewSession(r),
    throughBox(r),
    afterFlush(r)
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map(row => (row[i] as string).length)))
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ')} |`
  const out = [line(head), line(widths.map(w => '-'.repeat(w))), ...rows.map(line)]
  for (const r of report.relays) {
    if (r.skipped !== undefined) out.push(`skipped ${r.relay}: ${r.skipped}`)
  }
  for (const r of report.relays) {
    const how = r.results.upgrade?.how
    if (how !== undefined) out.push(`own upgrade of ${r.relay}: ${how}`)
  }
  return out.join('\n')
}
