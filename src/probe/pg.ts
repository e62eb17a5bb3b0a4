// pg: PostgreSQL. With credentials (--dsn, or PGUSER / PGDATABASE / PGPASSWORD / PGSERVICE in
// the environment) a real login through the `pg` client library (SCRAM and TLS are its
// business), then `SELECT 1` after the idle time: exactly what a pooled connection lives
// through. A server that ends a logged-in session says why first (FATAL: idle-session
// timeout, terminated by an administrator), so such a close is the server's, not the path's.
//
// Without credentials the connection only connects and, after the idle time, sends an
// SSLRequest (the heartbeat check's exchange). PostgreSQL closes a connection that has not
// logged in after `authentication_timeout` (60 s by default), silently: that close is
// reported as the server's own limit, and the path is measured only up to it.

import type { Socket } from 'node:net'
import type { ClientConfig } from 'pg'
import { ConfigError } from '../errors.ts'
import { formatEndpoint } from '../config/endpoint.ts'
import { SSL_REQUEST_EXCHANGE } from '../heartbeat/pg.ts'
import { Death, deathOf, ProbeLink, type ProbeCheck, type ProbeConnection, type ProbeTarget } from './check.ts'

type PgClientClass = typeof import('pg').Client

/** Environment variables that name a login: with any of them set, the probe logs in. */
const LOGIN_VARIABLES = ['PGUSER', 'PGDATABASE', 'PGPASSWORD', 'PGSERVICE'] as const

export function wantsLogin(dsn: string | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  return dsn !== undefined || LOGIN_VARIABLES.some((v) => (env[v] ?? '') !== '')
}

export async function pgCheck(options: { dsn: string | undefined }): Promise<ProbeCheck> {
  if (!wantsLogin(options.dsn)) {
    return {
      name: 'pg',
      describe: 'PostgreSQL SSLRequest, no login (give --dsn for a real login)',
      serverLimit: 'PostgreSQL closes a connection that has not logged in after authentication_timeout (60 s by default)',
      open: (target, connectTimeoutMs) => new ProbeLink(target, { proof: SSL_REQUEST_EXCHANGE, serverCloses: true }, connectTimeoutMs),
    }
  }
  const config = dsnConfig(options.dsn)
  const Client = await loadClient()
  return {
    name: 'pg',
    describe: 'PostgreSQL login, then SELECT 1',
    open: (target, connectTimeoutMs) => new PgConnection(Client, config, target, connectTimeoutMs),
  }
}

/** The `pg` library, loaded only when a login is asked for. */
async function loadClient(): Promise<PgClientClass> {
  try {
    return (await import('pg')).default.Client
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    const why = e.code === 'ERR_MODULE_NOT_FOUND' ? 'the "pg" package is not installed (npm install pg)' : e.message
    throw new ConfigError('--check pg', `a PostgreSQL login needs the pg client library: ${why}`)
  }
}

function dsnConfig(dsn: string | undefined): ClientConfig {
  if (dsn === undefined) return {}
  let url: URL
  try {
    url = new URL(dsn)
  } catch {
    throw new ConfigError('--dsn', 'expected postgres://user[:password]@host[:port]/database[?sslmode=...]')
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new ConfigError('--dsn', `expected a postgres:// URL (got ${url.protocol}//)`)
  }
  return { connectionString: dsn }
}

/** The DSN's credentials and options, but the host and port of --target: that is the path measured. */
function configFor(config: ClientConfig, target: ProbeTarget, connectTimeoutMs: number): ClientConfig {
  const base = { keepAlive: false, connectionTimeoutMillis: connectTimeoutMs, application_name: 'ka-proxy probe' }
  if (config.connectionString === undefined) return { ...base, host: target.host, port: target.port }
  const url = new URL(config.connectionString)
  url.host = formatEndpoint(target.host, target.port)
  return { ...base, connectionString: url.toString() }
}

/** A SQLSTATE: the server sent an ErrorResponse. */
const SQLSTATE = /^[0-9A-Z]{5}$/

function pgDeath(err: unknown): Death {
  if (err instanceof Death) return err
  const e = err as NodeJS.ErrnoException & { severity?: string }
  if (e.code !== undefined && SQLSTATE.test(e.code)) return new Death('closed', `server: ${e.severity ?? 'ERROR'} ${e.message} (SQLSTATE ${e.code})`, true)
  if (e.code !== undefined) return deathOf(e)
  if (/terminated/i.test(e.message)) return new Death('closed', 'connection closed without a word from the server')
  return new Death('reset', e.message)
}

class PgConnection implements ProbeConnection {
  readonly ready: Promise<void>
  readonly ended: Promise<Death>
  readonly #client: InstanceType<PgClientClass>
  #dead: Death | undefined
  #onEnd!: (d: Death) => void

  constructor(Client: PgClientClass, config: ClientConfig, target: ProbeTarget, connectTimeoutMs: number) {
    this.ended = new Promise((resolve) => (this.#onEnd = resolve))
    this.#client = new Client(configFor(config, target, connectTimeoutMs))
    this.#client.on('error', (err) => this.#die(pgDeath(err)))
    this.#client.on('end', () => this.#die(new Death('closed', 'connection closed without a word from the server')))
    this.ready = this.#client.connect().then(() => undefined, (err: unknown) => {
      const death = pgDeath(err)
      this.#die(death)
      throw death
    })
    this.ready.catch(() => {})
  }

  async prove(timeoutMs: number): Promise<void> {
    if (this.#dead) throw this.#dead
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Death('silent', `no answer to SELECT 1 within ${timeoutMs / 1000} s`)), timeoutMs)
    })
    try {
      await Promise.race([this.#client.query('SELECT 1'), timeout, this.ended.then((d) => Promise.reject(d))])
    } catch (err) {
      throw this.#dead ?? pgDeath(err)
    } finally {
      clearTimeout(timer)
    }
  }

  socket(): Socket | undefined {
    return (this.#client as unknown as { connection?: { stream?: Socket } }).connection?.stream
  }

  close(dead: boolean): void {
    const socket = this.socket()
    if (dead && !this.#dead && socket && !socket.destroyed) socket.resetAndDestroy()
    this.#client.end().catch(() => {})
  }

  #die(death: Death): void {
    if (this.#dead) return
    this.#dead = death
    this.#onEnd(death)
  }
}
