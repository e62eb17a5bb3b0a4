// The report as a picture: live sessions over time per relay, one panel per scenario, drawn as
// step lines in a hand-written SVG (no chart library: the shapes are simple and the file must
// open in any browser). Lines of relays that behave alike coincide, so each relay is drawn
// thinner than the one before it: coinciding lines show as nested bands of colour.

import type { Report, OutcomeSummary } from './report.ts'
import type { ScenarioName } from './options.ts'

const COLORS: Record<string, string> = {
  direct: '#7f7f7f',
  'ka-proxy': '#1f77b4',
  haproxy: '#ff7f0e',
  socat: '#2ca02c',
  nginx: '#9467bd'
}
const FALLBACK_COLORS = ['#d62728', '#8c564b', '#e377c2', '#17becf']

const PANEL_W = 480
const PANEL_H = 270
const MARGIN = { left: 50, right: 15, top: 46, bottom: 40 }
const LEGEND_H = 76

interface Panel {
  scenario: ScenarioName
  title: string
  xLabel: string
  /** A dashed vertical line: the NAT timeout or the keepalive bound. */
  marker: { at: number, label: string }
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, c => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c] as string)
}

function colorOf(relay: string, index: number): string {
  return COLORS[relay] ?? FALLBACK_COLORS[index % FALLBACK_COLORS.length] as string
}

/** Whole-number axis ticks, about five of them. */
function ticks(max: number): number[] {
  const raw = max / 5
  const step = [1, 2, 5, 10, 20, 25, 50, 100, 200, 500].find(s => s >= raw) ?? Math.ceil(raw)
  const out: number[] = []
  for (let v = 0; v <= max + 1e-9; v += step) out.push(v)
  return out
}

/** Stroke width of the i-th of n series: the first widest, the last 2 px. */
function strokeWidth(i: number, n: number): number {
  return 2 + 1.5 * (n - 1 - i)
}

/** The path of live sessions over time: start at all sessions, step down at each end. */
function stepPath(o: OutcomeSummary, x: (s: number) => number, y: (n: number) => number): string {
  let live = o.sessions
  let d = `M${x(0).toFixed(1)},${y(live).toFixed(1)}`
  for (const end of o.ends) {
    live -= 1
    d += ` H${x(Math.min(end, o.window)).toFixed(1)} V${y(live).toFixed(1)}`
  }
  return `${d} H${x(o.window).toFixed(1)}`
}

/** How one relay is drawn, the same in the legend and in every panel. */
interface Series {
  relay: string
  color: string
  width: number
  results: Report['relays'][number]['results']
}

function drawPanel(series: readonly Series[], panel: Panel, left: number, top: number): string {
  const outcomes = series
    .map(e => ({ ...e, o: e.results[panel.scenario] }))
    .filter((e): e is Series & { o: OutcomeSummary } => e.o !== undefined)
  const innerW = PANEL_W - MARGIN.left - MARGIN.right
  const innerH = PANEL_H - MARGIN.top - MARGIN.bottom
  const maxX = Math.max(1, panel.marker.at * 1.3, ...outcomes.map(e => e.o.window))
  const maxY = Math.max(1, ...outcomes.map(e => e.o.sessions))
  const x = (s: number): number => left + MARGIN.left + innerW * s / maxX
  const y = (n: number): number => top + MARGIN.top + innerH * (1 - n / maxY)
  const parts: string[] = []
  parts.push(`<text x="${left + MARGIN.left}" y="${top + 22}" class="title">${escapeXml(panel.title)}</text>`)
  if (outcomes.length === 0) {
    parts.push(`<text x="${left + PANEL_W / 2}" y="${top + PANEL_H / 2}" text-anchor="middle" class="note">not run</text>`)
    return parts.join('\n')
  }
  for (const v of ticks(maxX)) {
    parts.push(`<line x1="${x(v)}" y1="${y(0)}" x2="${x(v)}" y2="${y(maxY)}" class="grid"/>`)
    parts.push(`<text x="${x(v)}" y="${y(0) + 16}" text-anchor="middle" class="tick">${v}</text>`)
  }
  for (const v of ticks(maxY)) {
    parts.push(`<line x1="${x(0)}" y1="${y(v)}" x2="${x(maxX)}" y2="${y(v)}" class="grid"/>`)
    parts.push(`<text x="${x(0) - 6}" y="${y(v) + 4}" text-anchor="end" class="tick">${v}</text>`)
  }
  parts.push(`<line x1="${x(panel.marker.at)}" y1="${y(0)}" x2="${x(panel.marker.at)}" y2="${y(maxY)}" class="marker"/>`)
  parts.push(`<text x="${x(panel.marker.at) - 4}" y="${y(maxY * 0.5)}" text-anchor="end" class="note">${escapeXml(panel.marker.label)}</text>`)
  for (const e of outcomes) {
    parts.push(`<path d="${stepPath(e.o, x, y)}" stroke="${e.color}" stroke-width="${e.width}" class="series"><title>${escapeXml(e.relay)}</title></path>`)
  }
  // Coinciding lines hide who ended where: say it in words under the title.
  const finals = outcomes.map(e => `<tspan fill="${e.color}">${escapeXml(e.relay)} ${e.o.sessions - e.o.ends.length}</tspan>`)
  parts.push(`<text x="${left + MARGIN.left}" y="${top + 36}" class="note">live at the end: ${finals.join(' · ')}</text>`)
  parts.push(`<text x="${left + MARGIN.left + innerW / 2}" y="${top + PANEL_H - 6}" text-anchor="middle" class="axis">${escapeXml(panel.xLabel)}</text>`)
  parts.push(`<text transform="translate(${left + 14},${top + MARGIN.top + innerH / 2}) rotate(-90)" text-anchor="middle" class="axis">live sessions</text>`)
  return parts.join('\n')
}

export function renderChart(report: Report): string {
  const s = report.settings
  const bound = s.keepalive.idle + s.keepalive.interval * s.keepalive.count
  const clientBound = s.clientKeepalive.idle + s.clientKeepalive.interval * s.clientKeepalive.count
  const panels: Panel[] = [
    { scenario: 'survival', title: `Idle sessions through a NAT that forgets after T = ${s.natTimeout} s`, xLabel: 'seconds idle (checked at the end)', marker: { at: s.natTimeout, label: 'T' } },
    { scenario: 'blackhole', title: 'Server blackholed while idle', xLabel: 'seconds since the cut', marker: { at: bound, label: 'keepalive bound' } },
    { scenario: 'inflight', title: 'Server blackholed with data in flight', xLabel: 'seconds since the cut', marker: { at: bound, label: 'keepalive bound' } },
    { scenario: 'vanish', title: 'Client vanishes (live target legs)', xLabel: 'seconds since the cut', marker: { at: clientBound, label: 'client keepalive bound' } }
  ]
  const width = 2 * PANEL_W
  const height = LEGEND_H + 2 * PANEL_H
  const shown = report.relays.filter(r => r.skipped === undefined)
  const series = shown.map((r, i): Series => ({
    relay: r.relay, color: colorOf(r.relay, i), width: strokeWidth(i, shown.length), results: r.results
  }))
  const legend = series.map((e, i) => {
    const lx = 20 + i * 150
    return `<line x1="${lx}" y1="58" x2="${lx + 28}" y2="58" stroke="${e.color}" stroke-width="${e.width}" class="series"/>` +
      `<text x="${lx + 34}" y="62" class="legend">${escapeXml(e.relay)}</text>`
  })
  const ka = `keepalive ${s.keepalive.idle}/${s.keepalive.interval}/${s.keepalive.count} (bound ${bound} s), ${s.sessions} sessions per relay, ${report.startedAt}`
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">
<style>
  .title { font-size: 14px; font-weight: bold; }
  .tick, .note { font-size: 11px; fill: #555; }
  .axis { font-size: 12px; fill: #333; }
  .legend { font-size: 13px; }
  .grid { stroke: #e5e5e5; stroke-width: 1; }
  .marker { stroke: #999; stroke-width: 1; stroke-dasharray: 4 3; }
  .series { fill: none; stroke-opacity: 0.9; }
</style>
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="20" class="title">Connection survival: live sessions over time per relay</text>
<text x="20" y="38" class="note">${escapeXml(ka)}</text>
${legend.join('\n')}
${panels.map((p, i) => drawPanel(series, p, (i % 2) * PANEL_W, LEGEND_H + Math.floor(i / 2) * PANEL_H)).join('\n')}
</svg>
`
}
