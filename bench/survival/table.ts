// The report as a table for people: one row per relay, a column per question of the bench.
// Written in Markdown table syntax, so it reads in a terminal and pastes into a note as is.

import type { Report, RelayReport, OutcomeSummary } from './report.ts'

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

function survival(r: RelayReport): string {
  const o = r.results.survival
  if (o === undefined) return 'n/a'
  const pct = o.sessions === 0 ? 0 : Math.round(100 * (o.survived ?? 0) / o.sessions)
  return `${o.survived}/${o.sessions} (${pct} %)`
}

function perFault(r: RelayReport, cell: (o: OutcomeSummary | undefined) => string): string {
  return [r.results.blackhole, r.results.inflight, r.results.vanish].map(cell).join(' / ')
}

function socketsLeft(o: OutcomeSummary | undefined): string {
  return o?.socketsLeft === null || o?.socketsLeft === undefined ? '–' : String(o.socketsLeft)
}

const HEADERS = [
  'relay',
  'survived idle ≥ 3T',
  'blackhole, idle: client leg closed after',
  'blackhole, data in flight',
  'client vanishes: target leg closed after',
  'peer saw (idle / in flight / vanish)',
  'sockets left (idle / in flight / vanish)'
]

export function renderTable(report: Report): string {
  const rows = report.relays.filter(r => r.skipped === undefined).map(r => [
    r.relay,
    survival(r),
    detection(r.results.blackhole),
    detection(r.results.inflight),
    detection(r.results.vanish),
    perFault(r, peerSaw),
    perFault(r, socketsLeft)
  ])
  const widths = HEADERS.map((h, i) => Math.max(h.length, ...rows.map(row => (row[i] as string).length)))
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ')} |`
  const out = [line(HEADERS), line(widths.map(w => '-'.repeat(w))), ...rows.map(line)]
  for (const r of report.relays) {
    if (r.skipped !== undefined) out.push(`skipped ${r.relay}: ${r.skipped}`)
  }
  return out.join('\n')
}
