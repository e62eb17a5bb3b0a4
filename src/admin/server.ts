// The admin API: off by default; loopback unless a bearer token protects it.
//   GET /metrics   Prometheus text
//   GET /healthz   200 when every route listens and has a target up, else 503
//   GET /sessions  every open session with the live state of both legs (what `ss -o` shows)

import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import { isIP } from 'node:net'
import { timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import { ConfigError, ListenError } from '../errors.ts'
import type { KeepaliveApplier } from '../keepalive/socket-options.ts'
import type { LegHandle, Session } from '../session.ts'
import { formatEndpoint, parseListen, type Endpoint } from '../config/endpoint.ts'
import type { MetricsSource, ProxyMetrics } from './metrics.ts'

export interface AdminSource extends MetricsSource {
  /** Open sessions with the name of their route. */
  sessions(): Iterable<{ route: string; session: Session }>
  /** Per route: is it accepting, and how many of its targets are up. */
  health(): Array<{ route: string; listening: boolean; targetsUp: number; targets: number }>
}

export interface AdminOptions {
  listen: Endpoint
  token: string | undefined
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost'])

export function resolveAdmin(value: string | { listen: string; token?: string | undefined }, key: string): AdminOptions {
  const listen = parseListen(typeof value === 'string' ? value : value.listen, key)
  const token = typeof value === 'string' ? undefined : value.token
  const host = listen.host
  const loopback = host !== undefined && (LOOPBACK.has(host) || (isIP(host) === 4 && host.startsWith('127.')))
  if (!loopback && token === undefined) {
    throw new ConfigError(key, `${formatEndpoint(host, listen.port)} is not a loopback address: set a token (at least 16 characters) to expose the admin API`)
  }
  return { listen, token }
}

/** Live socket state of one leg; null when it cannot be read (closed, or no native helper). */
function legState(keepalive: KeepaliveApplier, socket: LegHandle | undefined) {
  if (socket === undefined || !keepalive.native) return null
  try {
    const ka = keepalive.read(socket)
    const tcp = keepalive.tcpInfo(socket)
    return {
      ...keepalive.addresses(socket),
      keepalive: ka,
      rttUs: tcp.rttUs,
      rttvarUs: tcp.rttvarUs,
      probes: tcp.probes,
      retransmits: tcp.retransmits,
      totalRetrans: tcp.totalRetrans,
      unacked: tcp.unacked,
      lastDataRecvMs: tcp.lastDataRecvMs,
      lastDataSentMs: tcp.lastDataSentMs,
      lastAckRecvMs: tcp.lastAckRecvMs,
    }
  } catch {
    return null
  }
}

export function sessionsReport(source: AdminSource, keepalive: KeepaliveApplier): object[] {
  const now = performance.now()
  const out: object[] = []
  for (const { route, session } of source.sessions()) {
    const client = legState(keepalive, session.legHandle('client'))
    const target = legState(keepalive, session.legHandle('target'))
    const idle = [client?.lastDataRecvMs, target?.lastDataRecvMs].filter((v): v is number => v !== undefined)
    out.push({
      route,
      session: session.id,
      client: session.clientAddress,
      target: session.targetAddress,
      ageMs: Math.round(now - session.startedAt),
      idleMs: idle.length ? Math.min(...idle) : null,
      bytesToTarget: session.bytesToTarget,
      bytesToClient: session.bytesToClient,
      legs: { client, target },
    })
  }
  return out
}

function tokenMatches(req: IncomingMessage, token: string): boolean {
  const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? ''
  const a = Buffer.from(given)
  const b = Buffer.from(token)
  return a.length === b.length && timingSafeEqual(a, b)
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' })
  res.end(body)
}

export class AdminServer {
  readonly #server: http.Server
  readonly #options: AdminOptions

  constructor(options: AdminOptions, source: AdminSource, metrics: ProxyMetrics, keepalive: KeepaliveApplier, logger: Logger) {
    this.#options = options
    this.#server = http.createServer((req, res) => {
      handle(req, res).catch((err: unknown) => {
        logger.error({ err }, 'admin request failed')
        if (!res.headersSent) send(res, 500, 'text/plain', 'internal error\n')
      })
    })
    const json = (res: ServerResponse, status: number, body: unknown): void => send(res, status, 'application/json', `${JSON.stringify(body)}\n`)
    const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
      if (options.token !== undefined && !tokenMatches(req, options.token)) {
        res.setHeader('www-authenticate', 'Bearer')
        return json(res, 401, { error: 'missing or wrong bearer token' })
      }
      if (req.method !== 'GET') return json(res, 405, { error: 'only GET' })
      const path = (req.url ?? '/').split('?')[0]
      switch (path) {
        case '/metrics':
          return send(res, 200, metrics.contentType, await metrics.text())
        case '/healthz': {
          const routes = source.health()
          const ready = routes.length > 0 && routes.every((r) => r.listening && r.targetsUp > 0)
          return json(res, ready ? 200 : 503, { status: ready ? 'ok' : 'unavailable', routes })
        }
        case '/sessions':
          return json(res, 200, { sessions: sessionsReport(source, keepalive) })
        default:
          return json(res, 404, { error: 'not found', endpoints: ['/metrics', '/healthz', '/sessions'] })
      }
    }
  }

  async start(): Promise<string> {
    const { host, port } = this.#options.listen
    const shown = formatEndpoint(host, port)
    this.#server.listen({ host, port })
    try {
      await Promise.race([once(this.#server, 'listening'), once(this.#server, 'error').then(([err]) => Promise.reject(err))])
    } catch (err) {
      throw new ListenError(shown, err as NodeJS.ErrnoException, '--admin')
    }
    const addr = this.#server.address() as import('node:net').AddressInfo
    return formatEndpoint(addr.address, addr.port)
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise((r) => this.#server.close(r))
  }
}
