// The survival chart draws what was measured: rendered to PNG by rsvg-convert (as a browser or an
// image viewer would), each relay's colour is found where its sessions were alive or open and is
// absent where they were not; panels of scenarios that were not run are left out; the table has
// the measured T next to the configured one. The report is synthetic: no lab needed.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inflateSync } from 'node:zlib'
import { chartLayout, renderChart, type PanelLayout } from '../bench/survival/chart.ts'
import { renderTable } from '../bench/survival/table.ts'
import { staggerIdle } from '../src/probe/schedule.ts'
import { curvePoints, firstDeath, sessionsPerPoint } from '../bench/survival/curve.ts'
import type { Report, OutcomeSummary } from '../bench/survival/report.ts'
import type { IdleCheck } from '../bench/lab/index.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'

const T = 15
const SESSIONS = 50
const IDLE_MAX = 45
const WINDOW = 45
const UPGRADE_WAIT = 30
const HARD_STOP = 10

const COLOR = { direct: [0x7f, 0x7f, 0x7f], 'ka-proxy': [0x1f, 0x77, 0xb4], haproxy: [0xff, 0x7f, 0x0e] } as const
type Relay = keyof typeof COLOR

function fault(ends: number[]): OutcomeSummary {
  return { relay: '', sessions: SESSIONS, ends, window: WINDOW, peerSaw: {}, socketsLeft: 0, descriptorsLeft: 0, linkDowns: null, logReasons: null }
}

function idleChecks(aliveUntil: number, sessions = SESSIONS): IdleCheck[] {
  return staggerIdle(0, IDLE_MAX, sessions, { spacing: 'even' }).map(idle => ({ idle, result: idle < aliveUntil ? 'ok' : 'timeout' }))
}

function survivalOf(checks: IdleCheck[]): NonNullable<Report['relays'][number]['results']['survival']> {
  const dead = checks.filter(c => c.result !== 'ok').map(c => c.idle)
  return { ...fault(dead), survived: SESSIONS - dead.length, idleMax: IDLE_MAX, checks }
}

function upgradeOf(ends: number[], how: string): NonNullable<Report['relays'][number]['results']['upgrade']> {
  return { ...fault(ends), window: UPGRADE_WAIT, how, working: SESSIONS - ends.length, newSession: true, upgradeSeconds: 1, oldRunning: false, peerSaw: ends.length > 0 ? { rst: ends.length } : {} }
}

/**
 * Direct dies at T and never notices a fault; ka-proxy keeps every session and closes at the
 * bound; HAProxy misses data in flight. Through its own upgrade ka-proxy keeps every session;
 * HAProxy's old process cuts them all at hard-stop-after.
 */
const report: Report = {
  startedAt: '2026-12-01T00:00:00.000Z',
  settings: {
    natTimeout: T,
    sessions: SESSIONS,
    idleMax: IDLE_MAX,
    keepalive: { idle: 5, interval: 2, count: 3 },
    clientKeepalive: { idle: 5, interval: 2, count: 3 },
    userTimeout: undefined,
    peerUserTimeout: undefined,
    relays: ['direct', 'ka-proxy', 'haproxy', 'nginx'],
    scenarios: ['survival', 'blackhole', 'inflight', 'upgrade'],
    window: WINDOW,
    upgradeWait: UPGRADE_WAIT,
    hardStopAfter: HARD_STOP,
    boxTimeout: 6,
    boxIdle: 30,
    flushAfter: 2,
    pairHeartbeat: 2,
    resumeWindow: undefined,
    outDir: 'unused'
  },
  userTimeout: { kaProxy: 'default (idle + interval × count)', peers: 'none' },
  machine: { kernel: 'test', node: process.version },
  relays: [
    { relay: 'direct', results: { survival: survivalOf(idleChecks(T)), blackhole: fault([]), inflight: fault([]) } },
    { relay: 'ka-proxy', results: { survival: survivalOf(idleChecks(Infinity)), blackhole: fault(Array(SESSIONS).fill(11.2)), inflight: fault(Array(SESSIONS).fill(11.6)), upgrade: upgradeOf([], 'SIGUSR2') } },
    { relay: 'haproxy', results: { survival: survivalOf(idleChecks(Infinity)), blackhole: fault(Array(SESSIONS).fill(11.2)), inflight: fault([]), upgrade: upgradeOf(Array(SESSIONS).fill(HARD_STOP), 'reload') } },
    { relay: 'nginx', skipped: 'nginx is not installed', results: {} }
  ]
}

/** The pixels of an 8-bit RGB or RGBA, non-interlaced PNG (what rsvg-convert writes), as RGBA. */
function decodePng(file: Buffer): { width: number, height: number, rgba: Buffer } {
  let pos = 8
  let width = 0
  let height = 0
  let bpp = 4
  const data: Buffer[] = []
  while (pos < file.length) {
    const length = file.readUInt32BE(pos)
    const type = file.toString('latin1', pos + 4, pos + 8)
    const body = file.subarray(pos + 8, pos + 8 + length)
    if (type === 'IHDR') {
      width = body.readUInt32BE(0)
      height = body.readUInt32BE(4)
      if (body[8] !== 8 || (body[9] !== 2 && body[9] !== 6) || body[12] !== 0) throw new Error('expected 8-bit RGB or RGBA without interlacing')
      bpp = body[9] === 6 ? 4 : 3
    } else if (type === 'IDAT') {
      data.push(body)
    }
    pos += 12 + length
  }
  const raw = inflateSync(Buffer.concat(data))
  const stride = width * bpp
  const pixels = Buffer.alloc(height * stride)
  for (let row = 0; row < height; row++) {
    const filter = raw[row * (stride + 1)]
    const line = raw.subarray(row * (stride + 1) + 1, (row + 1) * (stride + 1))
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? pixels[row * stride + i - bpp] as number : 0
      const b = row > 0 ? pixels[(row - 1) * stride + i] as number : 0
      const c = i >= bpp && row > 0 ? pixels[(row - 1) * stride + i - bpp] as number : 0
      const p = a + b - c
      const paeth = Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c) ? a : Math.abs(p - b) <= Math.abs(p - c) ? b : c
      const predicted = [0, a, b, (a + b) >> 1, paeth][filter as number] as number
      pixels[row * stride + i] = ((line[i] as number) + predicted) & 0xff
    }
  }
  if (bpp === 4) return { width, height, rgba: pixels }
  const rgba = Buffer.alloc(width * height * 4, 0xff)
  for (let i = 0; i < width * height; i++) pixels.copy(rgba, i * 4, i * 3, i * 3 + 3)
  return { width, height, rgba }
}

const rsvgMissing = missingPrerequisite(spawnSync('rsvg-convert', ['--version']).error !== undefined &&
  'rsvg-convert is not installed: apt-get install -y librsvg2-bin')

t.test('the chart renders, and each series is where it was measured', { skip: rsvgMissing }, async t => {
  const dir = mkdtempSync(join(tmpdir(), 'survival-chart-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const svg = renderChart(report)
  writeFileSync(join(dir, 'chart.svg'), svg)
  const rendered = spawnSync('rsvg-convert', ['-f', 'png', '-o', join(dir, 'chart.png'), join(dir, 'chart.svg')], { encoding: 'utf8' })
  t.equal(rendered.status, 0, `rsvg-convert renders the SVG ${rendered.stderr}`)
  if (process.env.SURVIVAL_CHART_PNG !== undefined) writeFileSync(process.env.SURVIVAL_CHART_PNG, readFileSync(join(dir, 'chart.png')))
  const png = decodePng(readFileSync(join(dir, 'chart.png')))
  const layout = chartLayout(report)
  t.same([png.width, png.height], [layout.width, layout.height], 'the image has the layout\'s size')
  t.same(layout.panels.map(p => p.scenario), ['survival', 'blackhole', 'inflight', 'upgrade'], 'one panel per scenario run; "vanish" was not run and has none')
  t.notOk(svg.includes('Client vanishes'), 'nothing of the scenario that was not run is drawn')
  t.notOk(svg.includes('nginx'), 'a skipped relay is neither drawn nor in the legend')

  /** Pixels within `r` of the point (seconds, fraction) in `panel` whose colour is within `tolerance` of `rgb`. */
  const near = (panel: PanelLayout, seconds: number, fraction: number, rgb: readonly number[], r = 5, tolerance = 12): number => {
    const cx = Math.round(panel.x(seconds))
    const cy = Math.round(panel.y(fraction))
    let n = 0
    for (let y = cy - r; y <= cy + r; y++) {
      for (let x = cx - r; x <= cx + r; x++) {
        const at = (y * png.width + x) * 4
        if (rgb.every((v, k) => Math.abs((png.rgba[at + k] as number) - v) <= tolerance)) n++
      }
    }
    return n
  }
  const panel = (scenario: string): PanelLayout => layout.panels.find(p => p.scenario === scenario) as PanelLayout
  const expect = (scenario: string, seconds: number, fraction: number, present: Relay[], absent: Relay[]): void => {
    const p = panel(scenario)
    for (const relay of present) t.ok(near(p, seconds, fraction, COLOR[relay]) >= 3, `${scenario}: ${relay} drawn at ${seconds} s, ${fraction * 100} %`)
    for (const relay of absent) t.equal(near(p, seconds, fraction, COLOR[relay]), 0, `${scenario}: no ${relay} at ${seconds} s, ${fraction * 100} %`)
  }

  // Idle survival: all at 100 % before T; after T direct at 0 %, the relays at 100 %.
  expect('survival', 5, 1, ['direct', 'ka-proxy', 'haproxy'], [])
  expect('survival', 30, 1, ['ka-proxy', 'haproxy'], ['direct'])
  expect('survival', 30, 0, ['direct'], ['ka-proxy', 'haproxy'])
  expect('survival', 20, 1, [], ['direct'])
  // The dashed marker is black, drawn over the series; nothing else there is that dark.
  const marked = (scenario: string, at: number): boolean => near(panel(scenario), at, 0.3, [0, 0, 0], 3, 80) >= 3
  t.ok(marked('survival', T), 'survival: T is marked')
  // Server blackholed while idle: the relays close at 11.2 s, direct stays open to the end of the window.
  expect('blackhole', 5, 1, ['direct', 'ka-proxy', 'haproxy'], [])
  expect('blackhole', 20, 0, ['ka-proxy', 'haproxy'], ['direct'])
  expect('blackhole', 40, 1, ['direct'], ['ka-proxy', 'haproxy'])
  t.ok(marked('blackhole', 11), 'blackhole: the keepalive bound is marked')
  t.notOk(marked('blackhole', 20), 'blackhole: nothing dark where nothing is marked')
  // In flight: only ka-proxy closes.
  expect('inflight', 20, 0, ['ka-proxy'], ['direct', 'haproxy'])
  expect('inflight', 40, 1, ['direct', 'haproxy'], ['ka-proxy'])

  // Their own upgrade: ka-proxy keeps all; HAProxy's old process cuts all at hard-stop-after (marked).
  expect('upgrade', 5, 1, ['ka-proxy', 'haproxy'], [])
  expect('upgrade', 20, 1, ['ka-proxy'], ['haproxy'])
  expect('upgrade', 20, 0, ['haproxy'], ['ka-proxy'])
  t.ok(marked('upgrade', HARD_STOP), 'upgrade: hard-stop-after is marked')

  t.match(svg, /each point: 1 session, idle times 0\.9 s apart/, 'the survival panel says what a point stands for')
  t.match(svg, /first died after: <tspan[^>]*>direct 14\.4–15\.3 s</, 'the survival panel says where the curve dropped')
})

t.test('the table has the measured T next to the configured one', async t => {
  const [head, , direct, ka, haproxy, skipped] = renderTable(report).split('\n').map(l => l.split('|').map(c => c.trim()))
  t.same(head?.slice(1, 4), ['relay', 'survived idle > T', `measured T (configured ${T} s)`])
  t.same(direct?.slice(1, 4), ['direct', '0/34 (0 %)', '14.4–15.3 s'])
  t.same(ka?.slice(1, 4), ['ka-proxy', '34/34 (100 %)', 'none died in 45 s'])
  t.same(haproxy?.slice(1, 5), ['haproxy', '34/34 (100 %)', 'none died in 45 s', '11.2 s'])
  t.same(skipped, ['skipped nginx: nginx is not installed'])
})

t.test('the table says who survives its own upgrade, and how each upgraded', async t => {
  const lines = renderTable(report).split('\n')
  const [head, , , ka, haproxy] = lines.map(l => l.split('|').map(c => c.trim()))
  const at = head?.indexOf(`own upgrade: working ${UPGRADE_WAIT} s after`) ?? -1
  t.same(head?.slice(at, at + 2), [`own upgrade: working ${UPGRADE_WAIT} s after`, 'own upgrade: new session'])
  t.same(ka?.slice(at, at + 2), ['50/50', 'yes'])
  t.same(haproxy?.slice(at, at + 2), [`0/50, closed ${HARD_STOP}.0 s, RST`, 'yes'])
  t.ok(lines.includes('own upgrade of ka-proxy: SIGUSR2') && lines.includes('own upgrade of haproxy: reload'))
})

t.test('the table says who came through the box and the NAT flush, and when', async t => {
  const boxed = (ends: number[], peerSaw: Record<string, number>): NonNullable<Report['relays'][number]['results']['box']> => ({ ...fault(ends), window: 30, peerSaw, survived: SESSIONS - ends.length })
  const withFaults: Report = {
    ...report,
    relays: [
      { relay: 'ka-proxy', results: { box: boxed(Array(SESSIONS).fill(6), { fin: SESSIONS }), flush: boxed(Array(SESSIONS).fill(3.4), { rst: SESSIONS }) } },
      { relay: 'ka-proxy-pair', results: { box: boxed([], {}), flush: { ...boxed([], {}), recovered: [2.2, 3.3] } } },
      { relay: 'direct', results: { flush: boxed(Array(SESSIONS).fill(45), {}) } }
    ]
  }
  const [head, , ka, pair, direct] = renderTable(withFaults).split('\n').map(l => l.split('|').map(c => c.trim()))
  t.same(head?.slice(-3, -1), ['box (6 s on data): alive after 30 s idle', 'NAT flushed: alive'])
  t.same(ka?.slice(-3, -1), ['0/50, closed 6.0 s, FIN', '0/50, closed 3.4 s, RST'])
  t.same(pair?.slice(-3, -1), ['50/50', '50/50 flowing again 2.2–3.3 s'])
  t.same(direct?.slice(-3, -1), ['n/a', '0/50, silent'])
})

t.test('beyond 50 sessions a point pools neighbours, and says so', async t => {
  // 120 sessions 0.375 s apart (planned to a hundredth: 15.375 is 15.38); the NAT forgets after 15.2 s.
  const checks = idleChecks(15.2, 120)
  t.equal(sessionsPerPoint(120), 3)
  const points = curvePoints(checks, 3)
  t.equal(points.length, 40, '120 sessions, 3 to a point')
  const straddling = points.find(p => Math.abs(p.idle - 15.375) < 0.02)
  t.same(straddling && { alive: straddling.alive, sessions: straddling.sessions }, { alive: 1, sessions: 3 },
    'the point at 15.38 s holds one session idle 15 s (alive) and two idle 15.38 and 15.75 s (dead): 1/3 alive')
  t.same(firstDeath(checks), { lastAlive: 15, firstDead: 15.38, aliveAfter: 0 })
  const pooled: Report = {
    ...report,
    settings: { ...report.settings, sessions: 120, scenarios: ['survival'] },
    relays: [{ relay: 'direct', results: { survival: { ...survivalOf(checks), sessions: 120 } } }]
  }
  const svg = renderChart(pooled)
  t.match(svg, /each point: 3 sessions, idle times 1\.1 s apart/)
  t.same(chartLayout(pooled).panels.map(p => p.scenario), ['survival'], 'only the survival panel')
})
