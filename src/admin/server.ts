// The admin API: off by default; loopback unless a bearer token protects it.
//   GET /metrics   Prometheus text
//   GET /healthz   200 when every route listens and has a target up, else 503
//   GET /sessions  every open session with the live state of both legs (what `ss -o` shows),
//                  streamed a slice per event-loop turn
// Connections are capped and must send their request promptly (see LIMITS).

import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import { timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import { ListenError } from '../errors.ts'
import type { SocketControl } from '../socket-control.ts'
import type { LegHandle, Session } from '../session.ts'
import { formatEndpoint } from '../config/endpoint.ts'
import type { AdminOptions } from '../config/admin.ts'
import type { MetricsSource, ProxyMetrics } from './metrics.ts'
import { handleFd } from '../node-internals.ts'

export interface AdminSource extends MetricsSource {
  /** Open sessions with the name of their route. */
  sessions(): Iterable<{ route: string; session: Session }>
  /** --workers: the worker threads' open sessions, each as /sessions shows it (sessionReport), as JSON. */
  workerSessions?(): Promise<string[]>
  /** --workers: this thread's number among the event loops (0), shown on its sessions as `worker`. */
  readonly loop?: number | undefined
  /** Per route: is it accepting, and how many of its targets are up. */
  health(): Array<{ route: string; listening: boolean; targetsUp: number; targets: number }>
  /** POST /failback: undefined when `route` names no route. */
  failback(route: string | undefined): FailbackReport | undefined
}

/** Per route: whether new connections moved back, and to which target (`from`: where they went before). */
export type FailbackReport = Array<{ route: string; moved: boolean; from?: string; to: string }>

/** Concurrent admin connections; a scraper and a few `status` calls need far fewer. */
export const MAX_CONNECTIONS = 32

/**
 * A request's headers must arrive within 5 s and the whole request within 10 s (checked
 * every second), so connections that send nothing, or trickle, are closed.
 */
const LIMITS: http.ServerOptions = { headersTimeout: 5000, requestTimeout: 10_000, connectionsCheckingInterval: 1000, keepAliveTimeout: 5000 }

/** Live socket state of one leg; null when it cannot be read (closed, or no native helper). */
function legState(sockets: SocketControl, socket: LegHandle | undefined) {
  if (socket === undefined || !sockets.native) return null
  try {
    const ka = sockets.read(socket)
    const tcp = sockets.tcpInfo(socket)
    return {
      ...sockets.addresses(socket),
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

/** One open session as /sessions shows it. */
export function sessionReport(route: string, session: Session, sockets: SocketControl, now: number): object {
  const client = legState(sockets, session.legHandle('client'))
  const target = legState(sockets, session.legHandle('target'))
  const idle = [client?.lastDataRecvMs, target?.lastDataRecvMs].filter((v): v is number => v !== undefined)
  return {
    route,
    session: session.id,
    client: session.clientAddress,
    target: session.targetAddress,
    ageMs: Math.round(now - session.startedAt),
    idleMs: idle.length ? Math.min(...idle) : null,
    bytesToTarget: session.bytesToTarget,
    bytesToClient: session.bytesToClient,
    legs: { client, target },
    ...(session.pair !== undefined && { pair: session.pair }),
  }
}

/** Sessions described per event-loop turn: each costs a few socket-option reads. */
const SESSIONS_PER_TURN = 64

let turns: Promise<void> = Promise.resolve()

/**
 * Waits for a later event-loop turn, one waiter per turn across all admin requests: a
 * dozen requests for /sessions take turns with each other and with the relay instead of
 * each holding the loop for a slice.
 */
function laterTurn(): Promise<void> {
  const mine = turns.then(() => new Promise<void>((resolve) => setImmediate(resolve)))
  turns = mine
  return mine
}

function drainedOrClosed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done)
      res.off('close', done)
      resolve()
    }
    res.on('drain', done)
    res.on('close', done)
  })
}

/**
 * Writes `{"sessions":[...]}` a slice at a time, yielding the event loop between slices
 * and waiting while the client reads slowly, so that 10,000 sessions cost the relay no
 * more than a few sessions' worth of work at a time. Sessions that open or close while it
 * runs may or may not be listed.
 */
async function streamSessions(res: ServerResponse, source: AdminSource, sockets: SocketControl): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
  if (res.req.method === 'HEAD') {
    res.end()
    return
  }
  let first = true
  let batch: string[] = []
  const flush = async (): Promise<boolean> => {
    const text = batch.join(',')
    batch = []
    if (!res.write(first ? `{"sessions":[${text}` : `,${text}`)) await drainedOrClosed(res)
    first = false
    await laterTurn()
    return !res.destroyed
  }
  const loop = source.loop
  for (const { route, session } of source.sessions()) {
    const row = sessionReport(route, session, sockets, performance.now())
    batch.push(JSON.stringify(loop === undefined ? row : { ...row, worker: loop }))
    if (batch.length >= SESSIONS_PER_TURN && !(await flush())) return
  }
  for (const row of (await source.workerSessions?.()) ?? []) {
    batch.push(row)
    if (batch.length >= SESSIONS_PER_TURN && !(await flush())) return
  }
  const rest = batch.join(',')
  res.end(first ? `{"sessions":[${rest}]}\n` : `${rest === '' ? '' : `,${rest}`}]}\n`)
}

function tokenMatches(req: IncomingMessage, token: string): boolean {
  // The scheme is case-insensitive (RFC 9110 11.1); the token itself is not.
  const given = /^bearer +(\S+) *$/i.exec(req.headers.authorization ?? '')?.[1] ?? ''
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
  readonly #metrics: ProxyMetrics
  /** Replaced by a reload that changes only the token. */
  token: string | undefined

  constructor(options: AdminOptions, source: AdminSource, metrics: ProxyMetrics, sockets: SocketControl, logger: Logger) {
    this.#options = options
    this.token = options.token
    this.#metrics = metrics
    this.#server = http.createServer(LIMITS, (req, res) => {
      handle(req, res).catch((err: unknown) => {
        logger.error({ err }, 'admin request failed')
        if (!res.headersSent) send(res, 500, 'text/plain', 'internal error\n')
      })
    })
    // Beyond this many, new connections are closed at once: the admin API must never take
    // the descriptors that sessions and heartbeats need.
    this.#server.maxConnections = MAX_CONNECTIONS
    const json = (res: ServerResponse, status: number, body: unknown): void => send(res, status, 'application/json', `${JSON.stringify(body)}\n`)
    const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
      if (this.token !== undefined && !tokenMatches(req, this.token)) {
        res.setHeader('www-authenticate', 'Bearer')
        return json(res, 401, { error: 'missing or wrong bearer token' })
      }
      const url = new URL(req.url ?? '/', 'http://admin')
      // The one request that changes something; it takes POST so that no scraper or probe can trigger it.
      if (url.pathname === '/failback') {
        if (req.method !== 'POST') {
          res.setHeader('allow', 'POST')
          return json(res, 405, { error: 'only POST' })
        }
        const route = url.searchParams.get('route') ?? undefined
        const routes = source.failback(route)
        if (routes === undefined) return json(res, 404, { error: `no route named ${JSON.stringify(route)}` })
        return json(res, 200, { routes })
      }
      // HEAD: the same answer without its body (Node leaves the body out).
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('allow', 'GET, HEAD')
        return json(res, 405, { error: 'only GET and HEAD' })
      }
      switch (url.pathname) {
        case '/metrics':
          return send(res, 200, metrics.contentType, await metrics.text())
        case '/healthz': {
          const routes = source.health()
          const ready = routes.length > 0 && routes.every((r) => r.listening && r.targetsUp > 0)
          return json(res, ready ? 200 : 503, { status: ready ? 'ok' : 'unavailable', routes })
        }
        case '/sessions':
          return streamSessions(res, source, sockets)
        default:
          return json(res, 404, { error: 'not found', endpoints: ['/metrics', '/healthz', '/sessions', 'POST /failback'] })
      }
    }
  }

  /** `fd`: a listening socket handed over by the process being upgraded. */
  async start(fd?: number): Promise<string> {
    const { host, port } = this.#options.listen
    const shown = formatEndpoint(host, port)
    this.#server.listen(fd === undefined ? { host, port } : { fd })
    try {
      await Promise.race([once(this.#server, 'listening'), once(this.#server, 'error').then(([err]) => Promise.reject(err))])
    } catch (err) {
      throw new ListenError(shown, err as NodeJS.ErrnoException, this.#options.listenKey)
    }
    // Serving /metrics from now on: the process's own figures start (not for an API that failed to listen).
    this.#metrics.collectProcessMetrics()
    const addr = this.#server.address() as import('node:net').AddressInfo
    return formatEndpoint(addr.address, addr.port)
  }

  /** The listening socket's descriptor (for the upgrade hand-over). */
  get listenFd(): number | undefined {
    return this.#server.listening ? handleFd(this.#server) : undefined
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise((r) => this.#server.close(r))
  }
}
