// `ka-proxy status`: the admin API's health and sessions as readable tables.

import { request } from 'undici'
import { ConfigError, KaError } from '../errors.ts'
import type { FailbackReport } from './server.ts'

interface LegReport {
  keepalive: { idle: number; interval: number; count: number; userTimeout: number }
  rttUs: number
  probes: number
  retransmits: number
  lastDataRecvMs: number
}

interface SessionReport {
  route: string
  session: number
  client: string
  target: string
  ageMs: number
  idleMs: number | null
  bytesToTarget: number
  bytesToClient: number
  legs: { client: LegReport | null; target: LegReport | null }
}

interface HealthReport {
  status: string
  routes: Array<{ route: string; listening: boolean; targetsUp: number; targets: number }>
}

async function getJson<T>(base: string, path: string, token: string | undefined, method: 'GET' | 'POST' = 'GET'): Promise<{ status: number; body: T }> {
  const url = new URL(path, base.includes('://') ? base : `http://${base}`)
  let res
  try {
    res = await request(url, { method, headers: token ? { authorization: `Bearer ${token}` } : {}, headersTimeout: 5000, bodyTimeout: 5000 })
  } catch (err) {
    throw new KaError('KA_ERR_ADMIN', `--admin: cannot reach ${url.origin} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
  if (res.statusCode === 401) throw new KaError('KA_ERR_ADMIN', `--admin-token: the admin API at ${url.origin} refused the token`)
  return { status: res.statusCode, body: (await res.body.json()) as T }
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}

const secs = (ms: number | null): string => (ms === null ? '-' : `${(ms / 1000).toFixed(1)} s`)

function legCells(leg: LegReport | null): string[] {
  if (!leg) return ['-', '-', '-']
  const ka = leg.keepalive
  return [`${ka.idle}/${ka.interval}/${ka.count} ut ${ka.userTimeout}`, `${(leg.rttUs / 1000).toFixed(2)} ms`, `${leg.probes}/${leg.retransmits}`]
}

export async function runStatus(admin: string, token: string | undefined, write: (text: string) => void): Promise<number> {
  const health = await getJson<HealthReport>(admin, '/healthz', token)
  const { body } = await getJson<{ sessions: SessionReport[] }>(admin, '/sessions', token)
  write(`health: ${health.body.status}\n`)
  write(`${table(['route', 'listening', 'targets up'], health.body.routes.map((r) => [r.route, r.listening ? 'yes' : 'no', `${r.targetsUp}/${r.targets}`]))}\n\n`)
  write(`${body.sessions.length} open session${body.sessions.length === 1 ? '' : 's'}\n`)
  if (body.sessions.length > 0) {
    const rows = body.sessions.map((s) => [
      s.route, String(s.session), s.client, s.target, secs(s.ageMs), secs(s.idleMs),
      String(s.bytesToTarget), String(s.bytesToClient),
      ...legCells(s.legs.client), ...legCells(s.legs.target),
    ])
    write(`${table([
      'route', 'id', 'client', 'target', 'age', 'idle', 'bytes→target', 'bytes→client',
      'client ka', 'client rtt', 'client probes/retr', 'target ka', 'target rtt', 'target probes/retr',
    ], rows)}\n`)
  }
  return health.status === 200 ? 0 : 1
}

/** `ka-proxy failback`: POST /failback, then one line per route saying where new connections go. */
export async function runFailback(admin: string, token: string | undefined, route: string | undefined, write: (text: string) => void): Promise<number> {
  const path = route === undefined ? '/failback' : `/failback?route=${encodeURIComponent(route)}`
  const { status, body } = await getJson<{ routes?: FailbackReport; error?: string }>(admin, path, token, 'POST')
  if (status === 404) throw new ConfigError('--route', body.error ?? 'no such route')
  if (status !== 200 || body.routes === undefined) throw new KaError('KA_ERR_ADMIN', `--admin: failback answered ${status} (${body.error ?? 'no detail'})`)
  for (const r of body.routes) {
    write(r.moved ? `${r.route}: new connections go back to ${r.to} (were going to ${r.from})\n` : `${r.route}: already on its first target ${r.to}\n`)
  }
  return 0
}
