// The report as a picture, hand-written SVG (no chart library: the shapes are simple and the
// file must open in any browser). It draws only what was measured:
// - idle survival: one point per check (or per few neighbouring checks), the fraction of sessions
//   alive against the seconds they had been idle, with the NAT's T marked;
// - one panel per fault that was run: the fraction of sessions still open against the seconds
//   since the fault, a step down at each close, up to where watching stopped, with the
//   configured detection bound marked.
// Scenarios that were not run get no panel. Relays that behave alike coincide, so each relay is
// drawn thinner than the one before it: coinciding lines show as nested bands of colour.

import type { Report, OutcomeSummary } from './report.ts'
import { SCENARIOS, type BenchSettings, type ScenarioName } from './options.ts'
import { curvePoints, firstDeath, sessionsPerPoint } from './curve.ts'

const COLORS: Record<string, string> = {
  direct: '#7f7f7f',
  'ka-proxy': '#1f77b4',
  haproxy: '#ff7f0e',
  socat: '#2ca02c',
  nginx: '#9467bd'
}
const FALLBACK_COLORS = ['#d62728', '#8c564b', '#e377c2', '#17becf']

const PANEL_W = 480
const PANEL_H = 300
const MARGIN = { left: 52, right: 18, top: 80, bottom: 40 }
const HEADER_H = 48
const LEGEND_ROW_H = 22
const LEGEND_ITEM_W = 130
/** Characters of 11 px text that fit across a panel. */
const FIGURE_CHARS = 76

type FaultName = Exclude<ScenarioName, 'survival'>

/** What each fault panel says and which bound it marks; a new fault scenario must add a line here. */
const FAULTS: Record<FaultName, (s: BenchSettings) => { title: string, marker: Marker }> = {
  blackhole: s => ({ title: 'Server blackholed while idle', marker: { at: bound(s.keepalive), label: `keepalive bound ${bound(s.keepalive)} s` } }),
  inflight: s => ({ title: 'Server blackholed with data in flight', marker: inFlightBound(s) }),
  vanish: s => ({ title: 'Client vanishes (target legs live)', marker: { at: bound(s.clientKeepalive), label: `client keepalive bound ${bound(s.clientKeepalive)} s` } }),
  upgrade: s => ({ title: "The relay's own upgrade or restart", marker: { at: s.hardStopAfter, label: `HAProxy hard-stop-after ${s.hardStopAfter} s` } }),
  box: s => ({ title: 'A box on the path times out on data only', marker: { at: s.boxTimeout, label: `box timeout ${s.boxTimeout} s` } }),
  flush: s => ({ title: 'The NAT forgets everything (conntrack -F)', marker: { at: 3 * s.pairHeartbeat + 2, label: `pair: heartbeat × 3 + 2 = ${3 * s.pairHeartbeat + 2} s` } })
}

interface Marker {
  at: number
  label: string
}

function bound(k: BenchSettings['keepalive']): number {
  return k.idle + k.interval * k.count
}

/** With data unacknowledged only TCP_USER_TIMEOUT ends the wait: ka-proxy's, or its default. */
function inFlightBound(s: BenchSettings): Marker {
  if (s.userTimeout === undefined) return { at: bound(s.keepalive), label: `TCP_USER_TIMEOUT ${bound(s.keepalive)} s` }
  if (s.userTimeout > 0) return { at: s.userTimeout, label: `TCP_USER_TIMEOUT ${s.userTimeout} s` }
  return { at: bound(s.keepalive), label: `keepalive bound ${bound(s.keepalive)} s (no TCP_USER_TIMEOUT)` }
}

/** How one relay is drawn, the same in the legend and in every panel. */
interface Series {
  relay: string
  color: string
  width: number
  results: Report['relays'][number]['results']
}

/** Where one panel sits and how its values map to pixels (also used by the test to find the series). */
export interface PanelLayout {
  scenario: ScenarioName
  left: number
  top: number
  /** Pixel column of `seconds` on the x axis. */
  x: (seconds: number) => number
  /** Pixel row of `fraction` (0–1) on the y axis. */
  y: (fraction: number) => number
  xMax: number
}

export interface ChartLayout {
  width: number
  height: number
  panels: PanelLayout[]
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, c => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c] as string)
}

function colorOf(relay: string, index: number): string {
  return COLORS[relay] ?? FALLBACK_COLORS[index % FALLBACK_COLORS.length] as string
}

/** Round axis ticks, about five of them. */
function ticks(max: number): number[] {
  const raw = max / 5
  const step = [0.5, 1, 2, 5, 10, 15, 20, 25, 30, 50, 60, 100, 120, 300, 600].find(s => s >= raw) ?? Math.ceil(raw)
  const out: number[] = []
  for (let v = 0; v <= max + 1e-9; v += step) out.push(v)
  return out
}

/** Stroke width of the i-th of n series: the first widest, the last 2 px; each shows a 1 px rim around the next. */
function strokeWidth(i: number, n: number): number {
  return 2 + 2 * (n - 1 - i)
}

function fmt(n: number): string {
  return n.toFixed(1)
}

/** Scenarios with a result for at least one relay, in the bench's order. */
function scenariosRun(report: Report): ScenarioName[] {
  return SCENARIOS.filter(s => report.relays.some(r => r.results[s] !== undefined))
}

function legendRows(relays: number, width: number): number {
  return Math.max(1, Math.ceil(relays / Math.max(1, Math.floor((width - 40) / LEGEND_ITEM_W))))
}

function xMaxOf(report: Report, scenario: ScenarioName): number {
  const s = report.settings
  const outcomes = report.relays.map(r => r.results[scenario]).filter(o => o !== undefined)
  if (scenario === 'survival') {
    const idles = outcomes.flatMap(o => o.checks?.map(c => c.idle) ?? [])
    return Math.max(1, s.idleMax, ...idles, s.natTimeout * 1.1)
  }
  return Math.max(1, FAULTS[scenario](s).marker.at * 1.3, ...outcomes.map(o => o.window))
}

export function chartLayout(report: Report): ChartLayout {
  const run = scenariosRun(report)
  const columns = Math.min(2, Math.max(1, run.length))
  const width = columns * PANEL_W
  const shown = report.relays.filter(r => r.skipped === undefined).length
  const top0 = HEADER_H + legendRows(shown, width) * LEGEND_ROW_H + 8
  const innerW = PANEL_W - MARGIN.left - MARGIN.right
  const innerH = PANEL_H - MARGIN.top - MARGIN.bottom
  const panels = run.map((scenario, i): PanelLayout => {
    const left = (i % columns) * PANEL_W
    const top = top0 + Math.floor(i / columns) * PANEL_H
    const xMax = xMaxOf(report, scenario)
    return {
      scenario,
      left,
      top,
      xMax,
      x: s => left + MARGIN.left + innerW * s / xMax,
      y: f => top + MARGIN.top + innerH * (1 - f)
    }
  })
  return { width, height: top0 + Math.max(1, Math.ceil(run.length / columns)) * PANEL_H, panels }
}

/** Grid, ticks and axis labels of one panel. */
function frame(p: PanelLayout, xLabel: string, yLabel: string): string[] {
  const parts: string[] = []
  for (const v of ticks(p.xMax)) {
    parts.push(`<line x1="${fmt(p.x(v))}" y1="${fmt(p.y(0))}" x2="${fmt(p.x(v))}" y2="${fmt(p.y(1))}" class="grid"/>`)
    parts.push(`<text x="${fmt(p.x(v))}" y="${fmt(p.y(0) + 16)}" text-anchor="middle" class="tick">${v}</text>`)
  }
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(`<line x1="${fmt(p.x(0))}" y1="${fmt(p.y(v))}" x2="${fmt(p.x(p.xMax))}" y2="${fmt(p.y(v))}" class="grid"/>`)
    parts.push(`<text x="${fmt(p.x(0) - 6)}" y="${fmt(p.y(v) + 4)}" text-anchor="end" class="tick">${v * 100} %</text>`)
  }
  const innerW = PANEL_W - MARGIN.left - MARGIN.right
  parts.push(`<text x="${fmt(p.left + MARGIN.left + innerW / 2)}" y="${fmt(p.top + PANEL_H - 6)}" text-anchor="middle" class="axis">${escapeXml(xLabel)}</text>`)
  parts.push(`<text transform="translate(${p.left + 14},${fmt((p.y(0) + p.y(1)) / 2)}) rotate(-90)" text-anchor="middle" class="axis">${escapeXml(yLabel)}</text>`)
  return parts
}

/** The dashed line of T or of a detection bound, drawn over the series so that none hides it. */
function drawMarker(p: PanelLayout, marker: Marker): string {
  const x = p.x(marker.at)
  // The label goes to the right of the line, or to its left when the line is in the panel's right part.
  const label = marker.at > p.xMax * 0.6 ? `x="${fmt(x - 5)}" text-anchor="end"` : `x="${fmt(x + 5)}"`
  return `<line x1="${fmt(x)}" y1="${fmt(p.y(0))}" x2="${fmt(x)}" y2="${fmt(p.y(1) - 4)}" class="marker"/>\n` +
    `<text ${label} y="${fmt(p.y(0.62))}" class="note halo">${escapeXml(marker.label)}</text>`
}

/** Title, a line on what a point or line stands for, and a line of per-relay figures in their colours. */
function heading(p: PanelLayout, title: string, about: string, lead: string, figures: Array<{ e: Series, text: string }>): string[] {
  const x = p.left + MARGIN.left
  const parts = [
    `<text x="${x}" y="${p.top + 18}" class="title">${escapeXml(title)}</text>`,
    `<text x="${x}" y="${p.top + 34}" class="note">${escapeXml(about)}</text>`
  ]
  // Two lines at most; a line holds about FIGURE_CHARS characters of 11 px text.
  const lines: string[][] = [[]]
  let used = lead.length
  for (const { e, text } of figures) {
    const label = `${e.relay} ${text}`
    if (used + label.length + 3 > FIGURE_CHARS && (lines.at(-1) as string[]).length > 0) {
      lines.push([])
      used = 0
    }
    (lines.at(-1) as string[]).push(`<tspan fill="${e.color}">${escapeXml(label)}</tspan>`)
    used += label.length + 3
  }
  lines.slice(0, 2).forEach((line, i) => {
    parts.push(`<text x="${x}" y="${p.top + 50 + 14 * i}" class="note">${i === 0 ? escapeXml(lead) : ''}${line.join(' · ')}</text>`)
  })
  return parts
}

/** "idle times 0.9 s apart" (or "0.1–2.9 s apart" when not evenly spread), as measured. */
function spacing(drawn: readonly Series[], perPoint: number): string {
  const idles = drawn.map(e => curvePoints(e.results.survival?.checks ?? [], perPoint).map(p => p.idle))
  const longest = idles.reduce((a, b) => (b.length > a.length ? b : a), [])
  const gaps = longest.slice(1).map((idle, i) => idle - (longest[i] as number))
  if (gaps.length === 0) return 'one idle time'
  const [low, high] = [fmt(Math.min(...gaps)), fmt(Math.max(...gaps))]
  return `idle times ${low === high ? low : `${low}–${high}`} s apart`
}

function drawSurvival(series: readonly Series[], p: PanelLayout, s: BenchSettings): string {
  const perPoint = sessionsPerPoint(s.sessions)
  const drawn = series.filter(e => e.results.survival?.checks !== undefined)
  const about = `each point: ${perPoint === 1 ? '1 session' : `${perPoint} sessions`}, ${spacing(drawn, perPoint)}, each checked once`
  const figures = drawn.map(e => {
    const death = firstDeath(e.results.survival?.checks ?? [])
    return { e, text: death === null ? 'none' : `${fmt(death.lastAlive)}–${fmt(death.firstDead)} s${death.aliveAfter > 0 ? ` (${death.aliveAfter} alive later)` : ''}` }
  })
  const parts = [
    ...heading(p, `Idle sessions through a NAT that forgets after T = ${s.natTimeout} s`, about, 'first died after: ', figures),
    ...frame(p, 'seconds idle when checked', 'sessions alive')
  ]
  for (const e of drawn) {
    const points = curvePoints(e.results.survival?.checks ?? [], perPoint)
    const xy = points.map(pt => `${fmt(p.x(pt.idle))},${fmt(p.y(pt.alive / pt.sessions))}`)
    parts.push(`<g class="relay" data-relay="${escapeXml(e.relay)}" data-scenario="survival"><title>${escapeXml(e.relay)}</title>`)
    parts.push(`<polyline points="${xy.join(' ')}" stroke="${e.color}" stroke-width="${e.width}" class="series"/>`)
    for (const at of xy) {
      const [cx, cy] = at.split(',')
      parts.push(`<circle cx="${cx}" cy="${cy}" r="${fmt(e.width / 2 + 1.5)}" fill="${e.color}"/>`)
    }
    parts.push('</g>')
  }
  parts.push(drawMarker(p, { at: s.natTimeout, label: `T = ${s.natTimeout} s` }))
  return parts.join('\n')
}

/** The fraction still open: from 1 at the fault, a step down at each close, to where watching stopped. */
function stepPath(o: OutcomeSummary, p: PanelLayout): string {
  const total = Math.max(1, o.sessions)
  let open = o.sessions
  let d = `M${fmt(p.x(0))},${fmt(p.y(open / total))}`
  for (const end of o.ends) {
    open -= 1
    d += ` H${fmt(p.x(Math.min(end, o.window)))} V${fmt(p.y(open / total))}`
  }
  return `${d} H${fmt(p.x(o.window))}`
}

function drawFault(series: readonly Series[], p: PanelLayout, fault: FaultName, s: BenchSettings): string {
  const { title, marker } = FAULTS[fault](s)
  const drawn = series
    .map(e => ({ e, o: e.results[fault] }))
    .filter((d): d is { e: Series, o: OutcomeSummary } => d.o !== undefined)
  const sessions = [...new Set(drawn.map(d => d.o.sessions))].join('/')
  const about = `${sessions} sessions per relay; a line ends where watching stopped`
  const figures = drawn.map(({ e, o }) => ({ e, text: `${o.sessions - o.ends.length}/${o.sessions}` }))
  const parts = [...heading(p, title, about, 'open at the end: ', figures), ...frame(p, 'seconds since the fault', 'sessions still open')]
  for (const { e, o } of drawn) {
    parts.push(`<path d="${stepPath(o, p)}" stroke="${e.color}" stroke-width="${e.width}" class="series" data-relay="${escapeXml(e.relay)}" data-scenario="${fault}"><title>${escapeXml(e.relay)}</title></path>`)
  }
  parts.push(drawMarker(p, marker))
  return parts.join('\n')
}

export function renderChart(report: Report): string {
  const s = report.settings
  const layout = chartLayout(report)
  const shown = report.relays.filter(r => r.skipped === undefined)
  const series = shown.map((r, i): Series => ({
    relay: r.relay, color: colorOf(r.relay, i), width: strokeWidth(i, shown.length), results: r.results
  }))
  const perRow = Math.max(1, Math.floor((layout.width - 40) / LEGEND_ITEM_W))
  const legend = series.map((e, i) => {
    const lx = 20 + (i % perRow) * LEGEND_ITEM_W
    const ly = HEADER_H + Math.floor(i / perRow) * LEGEND_ROW_H + 8
    return `<line x1="${lx}" y1="${ly}" x2="${lx + 28}" y2="${ly}" stroke="${e.color}" stroke-width="${e.width}" class="series"/>` +
      `<text x="${lx + 34}" y="${ly + 4}" class="legend">${escapeXml(e.relay)}</text>`
  })
  const ka = `keepalive ${s.keepalive.idle}/${s.keepalive.interval}/${s.keepalive.count} (bound ${bound(s.keepalive)} s), ` +
    `${s.sessions} sessions per relay and scenario, ${report.startedAt}`
  const panels = layout.panels.map(p => p.scenario === 'survival' ? drawSurvival(series, p, s) : drawFault(series, p, p.scenario, s))
  if (panels.length === 0) panels.push(`<text x="20" y="${HEADER_H + 60}" class="note">no scenario was run</text>`)
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${layout.width}" height="${layout.height}" viewBox="0 0 ${layout.width} ${layout.height}" font-family="sans-serif">
<style>
  .title { font-size: 14px; font-weight: bold; }
  .tick, .note { font-size: 11px; fill: #555; }
  .axis { font-size: 12px; fill: #333; }
  .legend { font-size: 13px; }
  .grid { stroke: #e5e5e5; stroke-width: 1; }
  .marker { stroke: #000; stroke-width: 1.5; stroke-dasharray: 5 3; }
  .series { fill: none; stroke-linejoin: round; }
  .halo { paint-order: stroke; stroke: white; stroke-width: 4px; stroke-linejoin: round; }
</style>
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="20" class="title">Connection survival per relay</text>
<text x="20" y="38" class="note">${escapeXml(ka)}</text>
${legend.join('\n')}
${panels.join('\n')}
</svg>
`
}
