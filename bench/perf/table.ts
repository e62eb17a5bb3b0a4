// The report as tables for people, in Markdown syntax so they read in a terminal and paste into
// the README as they are: one row per measure, one column per relay, each cell the median and
// (when repeated) the min–max range; then ka-proxy against HAProxy for the targets of the issue
// that set the bar, and against an older ka-proxy when one ran.

import type { CaseName } from './options.ts'
import type { RelayReport, Report } from './report.ts'
import type { Summary } from './stats.ts'

interface Measure {
  label: string
  case: CaseName
  metric: string
  /** Which way is better, for ratios. */
  better: 'higher' | 'lower'
  /** The issue's target for ka-proxy / HAProxy; a number is a bound on the ratio. */
  target?: { ratio: number } | { atMost: number, unit: string }
  /** An aim for the figure itself, whatever the other relays do (the upgrade's). */
  aim?: { atMost: number, unit: string }
}

/** The rows of one upgrade case: `what` names its sessions. */
function upgradeMeasures(c: 'upgrade-idle' | 'upgrade-busy', what: string): Measure[] {
  const m = (label: string, metric: string, better: 'higher' | 'lower' = 'lower', aim?: Measure['aim']): Measure =>
    ({ label: `upgrade, ${what}: ${label}`, case: c, metric, better, ...(aim === undefined ? {} : { aim }) })
  return [
    m('SIGUSR2 → old process exit, ms', 'upgradeMs', 'lower', { atMost: 1000, unit: 'ms' }),
    m('sessions moved (incl. the ping-pong one)', 'sessionsMoved', 'higher'),
    m('spawn → new process ready, ms', 'readyMs'),
    m('of which a start (spawn → listening), ms', 'startMs'),
    m('≈ hand-over beyond the start, ms', 'handoverMs'),
    m('new process adopting the sessions, ms', 'adoptMs'),
    m('longest ping-pong round trip, ms', 'stallMs', 'lower', { atMost: 100, unit: 'ms' }),
    m('  which started, ms after SIGUSR2', 'stallFromMs'),
    m('ping-pong p50 before, µs', 'p50BeforeUs')
  ]
}

function measures(report: Report): Measure[] {
  const s = report.settings
  const all: Measure[] = [
    { label: 'bulk up, 1 stream: MB/s', case: 'bulk1', metric: 'MBps', better: 'higher', target: { ratio: 1 } },
    { label: `bulk up, ${s.streams} streams: MB/s`, case: 'bulk8', metric: 'MBps', better: 'higher', target: { ratio: 1 } },
    { label: 'bulk down, 1 stream: MB/s', case: 'down1', metric: 'MBps', better: 'higher', target: { ratio: 1 } },
    { label: `bulk down, ${s.streams} streams: MB/s`, case: 'down8', metric: 'MBps', better: 'higher', target: { ratio: 1 } },
    { label: `ping-pong ${s.rrSize} B, 1 conn: p50 µs`, case: 'rr1', metric: 'p50us', better: 'lower' },
    { label: `ping-pong ${s.rrSize} B, 1 conn: p99 µs`, case: 'rr1', metric: 'p99us', better: 'lower' },
    { label: `ping-pong ${s.rrSize} B, ${s.rrConns} conns: RT/s`, case: 'rr32', metric: 'roundTripsPerSec', better: 'higher', target: { ratio: 1 } },
    { label: `pgbench -S -c ${s.pgbenchClients}: TPS`, case: 'pgbench', metric: 'tps', better: 'higher', target: { ratio: 1 } },
    { label: 'pgbench: latency ms', case: 'pgbench', metric: 'latencyMs', better: 'lower' },
    { label: 'idle: bytes/session (PSS)', case: 'idle', metric: 'bytesPerSession', better: 'lower', target: { atMost: 6 * 1024, unit: 'bytes' } },
    { label: 'idle: growth incl. one-time, bytes/session', case: 'idle', metric: 'growthBytesPerSession', better: 'lower' },
    { label: 'idle: sessions opened/s', case: 'idle', metric: 'opensPerSec', better: 'higher', target: { ratio: 1 } },
    { label: 'idle: first sessions of a new process opened/s', case: 'idle', metric: 'coldOpensPerSec', better: 'higher' },
    { label: 'relay CPU: ms/GiB, up, 1 stream', case: 'bulk1', metric: 'relayCpuMsPerGiB', better: 'lower' },
    { label: `relay CPU: ms/GiB, up, ${s.streams} streams`, case: 'bulk8', metric: 'relayCpuMsPerGiB', better: 'lower' },
    { label: 'relay CPU: ms/GiB, down, 1 stream', case: 'down1', metric: 'relayCpuMsPerGiB', better: 'lower' },
    { label: `relay CPU: ms/GiB, down, ${s.streams} streams`, case: 'down8', metric: 'relayCpuMsPerGiB', better: 'lower' },
    { label: 'relay CPU: µs/RT, 1 conn', case: 'rr1', metric: 'relayCpuUsPerRoundTrip', better: 'lower' },
    { label: `relay CPU: µs/RT, ${s.rrConns} conns`, case: 'rr32', metric: 'relayCpuUsPerRoundTrip', better: 'lower' },
    { label: 'relay CPU: µs/pgbench transaction', case: 'pgbench', metric: 'relayCpuUsPerTransaction', better: 'lower' },
    { label: 'relay CPU: µs/session opened', case: 'idle', metric: 'relayCpuUsPerOpen', better: 'lower', target: { ratio: 1 } },
    { label: 'relay CPU: µs/session opened, first sessions of a new process', case: 'idle', metric: 'coldCpuUsPerOpen', better: 'lower' },
    { label: 'relay CPU: µs/session closed, all reset at once', case: 'idle', metric: 'relayCpuUsPerClose', better: 'lower' },
    // Of the CPU per session opened and closed, the relay's own code's share; the rest is the kernel's (system calls, page faults).
    { label: 'relay CPU in user space: µs/session opened', case: 'idle', metric: 'relayUserUsPerOpen', better: 'lower' },
    { label: 'relay CPU in user space: µs/session closed', case: 'idle', metric: 'relayUserUsPerClose', better: 'lower' },
    // --workers (ka-proxy-w2): the busiest event loop's share of the sessions.
    { label: `workers: sessions on the busiest, %, up, ${s.streams} streams`, case: 'bulk8', metric: 'busiestLoopPct', better: 'lower' },
    { label: `workers: sessions on the busiest, %, ${s.rrConns} conns`, case: 'rr32', metric: 'busiestLoopPct', better: 'lower' },
    ...upgradeMeasures('upgrade-idle', 'idle sessions'),
    ...upgradeMeasures('upgrade-busy', `${s.upgradeBusy} busy`),
    { label: `upgrade, ${s.upgradeBusy} busy: MB echoed and checked`, case: 'upgrade-busy', metric: 'verifiedMB', better: 'higher' },
    { label: `upgrade, ${s.upgradeBusy} busy: longest wait for an echo, ms`, case: 'upgrade-busy', metric: 'longestGapMs', better: 'lower' }
  ]
  return all.filter(m => s.cases.includes(m.case))
}

/** 3 significant-looking digits: 3,235 / 41.2 / 2.07. */
export function num(v: number): string {
  const a = Math.abs(v)
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : 2
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

function cell(s: Summary | undefined): string {
  if (s === undefined) return '–'
  return s.values.length === 1 ? num(s.median) : `${num(s.median)} (${num(s.min)}–${num(s.max)})`
}

function summaryOf(r: RelayReport | undefined, m: Measure): Summary | undefined {
  return r?.cases[m.case]?.summary[m.metric]
}

function relayCell(r: RelayReport, m: Measure): string {
  const s = summaryOf(r, m)
  if (s !== undefined) return cell(s)
  return (r.cases[m.case]?.errors.length ?? 0) > 0 ? 'failed' : '–'
}

function markdown(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map(row => row[i]!.length)))
  const line = (cells: string[]): string =>
    `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`
  const rule = `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`
  return [line(headers), rule, ...rows.map(line)].join('\n')
}

export function renderTable(report: Report): string {
  const relays = report.relays.filter(r => r.skipped === undefined)
  const rows = measures(report).map(m => [m.label, ...relays.map(r => relayCell(r, m))])
  const out = [markdown(['measure', ...relays.map(r => r.relay)], rows)]
  for (const r of report.relays) {
    if (r.skipped !== undefined) out.push(`skipped ${r.relay}: ${r.skipped}`)
    for (const [name, result] of Object.entries(r.cases)) {
      for (const err of result?.errors ?? []) out.push(`failed ${r.relay} ${name}: ${err}`)
    }
  }
  return out.join('\n')
}

/** Each relay's figure against the aims set for it alone (the upgrade's): null when none was measured. */
export function renderAims(report: Report): string | null {
  const rows: string[][] = []
  for (const m of measures(report)) {
    if (m.aim === undefined) continue
    for (const r of report.relays) {
      const x = summaryOf(r, m)
      if (x === undefined) continue
      rows.push([m.label, r.relay, cell(x), `≤ ${num(m.aim.atMost)} ${m.aim.unit}`, x.max <= m.aim.atMost ? 'yes' : x.median <= m.aim.atMost ? 'median' : 'no'])
    }
  }
  return rows.length === 0 ? null : markdown(['measure', 'relay', 'figure', 'aim', 'met'], rows)
}

function ratio(a: Summary | undefined, b: Summary | undefined): number | undefined {
  if (a === undefined || b === undefined || b.median === 0) return undefined
  return a.median / b.median
}

/** `numerator / denominator` for every measure both have, with the target where one is set. */
export function renderRatios(report: Report, numerator: string, denominator: string, withTargets: boolean): string | null {
  const a = report.relays.find(r => r.relay === numerator && r.skipped === undefined)
  const b = report.relays.find(r => r.relay === denominator && r.skipped === undefined)
  if (a === undefined || b === undefined) return null
  const rows: string[][] = []
  for (const m of measures(report)) {
    if (withTargets && m.target === undefined) continue
    const x = summaryOf(a, m)
    const y = summaryOf(b, m)
    const q = ratio(x, y)
    if (q === undefined || x === undefined) continue
    const row = [m.label, num(x.median), num(y!.median), `${q.toFixed(2)}×`]
    if (withTargets) {
      const t = m.target!
      const met = 'ratio' in t ? (m.better === 'higher' ? q >= t.ratio : q <= t.ratio) : x.median <= t.atMost
      const goal = 'ratio' in t ? `${m.better === 'higher' ? '≥' : '≤'} ${t.ratio.toFixed(1)}×` : `≤ ${num(t.atMost)} ${t.unit}`
      row.push(goal, met ? 'yes' : 'no')
    } else {
      row.push(m.better === 'higher' ? 'higher is better' : 'lower is better')
    }
    rows.push(row)
  }
  if (rows.length === 0) return null
  const headers = ['measure (medians)', numerator, denominator, 'ratio', ...(withTargets ? ['target', 'met'] : ['note'])]
  return markdown(headers, rows)
}
