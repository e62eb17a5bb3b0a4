// From what the user gave (flags, KA_PROXY_* variables, a config file) to the checked
// AppConfig the proxy runs. Flags override the file for a one-route config; every error
// names where the bad value came from: the flag, or the file and key path.

import { resolveAdmin, type AdminOptions } from './admin.ts'
import { ConfigError } from '../errors.ts'
import { loadConfigFile } from './file.ts'
import { DEFAULTS, resolveOptions, type ProxyOptions, type RawOptions } from './options.ts'
import { FILE_GROUP, flagOf, givenSettings, KEEPALIVE_SCOPES, routeKeyOf, valueAt, type KeyNamer } from './keys.ts'
import { formatEndpoint } from './endpoint.ts'
import { toSeconds } from './duration.ts'
import type { ConfigFile, RouteConfig } from './schema.ts'
import { resolveLog, type LogOptions } from './log.ts'
import { PidFile } from '../pid-file.ts'
import { availableParallelism } from 'node:os'

/** Everything the proxy runs: its routes, the admin API, and process-wide settings. */
export interface AppConfig {
  routes: ProxyOptions[]
  admin: AdminOptions | undefined
  /** Seconds sessions get to finish on SIGINT/SIGTERM, and on routes removed by a reload. */
  shutdownGrace: number
  /** Where and how the process logs (the CLI sets its logger up from this). */
  log: LogOptions
  /** --pid-file / `pidFile:`: written once every route listens (a reload does not move it). */
  pidFile?: PidFile | undefined
  /** --workers / `workers:`: event loops that accept and relay, each with its own pump (src/workers.ts). */
  workers: number
}

export interface CliInput extends RawOptions {
  config?: string
  admin?: string
  adminToken?: string
  /** --log-level, --log-format, --log-file: each given one beats the file's `log:`. */
  log?: Partial<LogOptions>
  /** --pid-file: beats the file's `pidFile:`. */
  pidFile?: string
  /** --workers: beats the file's `workers:`; a count or 'auto'. */
  workers?: string | number
}

/** A route from a file, in the same shape the flags arrive in. */
export function rawFromRoute(r: RouteConfig, shutdownGrace: number | undefined): RawOptions {
  const keepalive = Object.fromEntries(KEEPALIVE_SCOPES.map((scope) => [scope, { ...r[FILE_GROUP[scope]] }])) as RawOptions['keepalive'] & object
  keepalive.shared!.profile ??= r.profile
  return {
    name: r.name,
    listen: r.listen,
    target: Array.isArray(r.target) ? r.target.join(',') : r.target,
    balance: r.balance,
    failback: r.failback,
    keepalive,
    heartbeat: r.heartbeat ?? undefined,
    maxConnections: r.maxConnections,
    backlog: r.backlog,
    connectTimeout: r.connectTimeout,
    halfCloseTimeout: r.halfCloseTimeout,
    flushTimeout: r.flushTimeout,
    shutdownGrace,
    pairListen: r.pairListen,
    pairConnect: r.pairConnect,
    pairSecretFile: r.pairSecretFile,
    pairHeartbeat: r.pairHeartbeat,
    resumeWindow: r.resumeWindow,
  }
}

/** What Node's setKeepAlive cannot apply: all but idle (a profile sets the others). */
const FALLBACK_IGNORES = ['interval', 'count', 'userTimeout', 'profile'] as const

/**
 * The keepalive settings given explicitly (flags, or keys of the config file) that Node's
 * setKeepAlive fallback cannot apply, each named as the user wrote it.
 */
export function ignoredByFallback(cli: CliInput): string[] {
  const named = (raw: RawOptions, keyOf: KeyNamer): string[] =>
    KEEPALIVE_SCOPES.flatMap((scope) => FALLBACK_IGNORES.filter((field) => raw.keepalive?.[scope]?.[field] !== undefined).map((field) => keyOf(['keepalive', scope, field])))
  const out = named(cli, flagOf)
  if (cli.config === undefined) return out
  loadConfigFile(cli.config).routes.forEach((route, i) => {
    out.push(...named(rawFromRoute(route, undefined), (key) => `${cli.config}: routes[${i}].${routeKeyOf(key, route)}`))
  })
  return out
}

/** Route-level values as flags give them (process-wide ones such as --native do not count). */
function routeFlags(cli: CliInput): RawOptions {
  const { config: _c, admin: _a, adminToken: _t, native: _n, shutdownGrace: _g, log: _l, pidFile: _p, workers: _w, ...route } = cli
  return route
}

const isMapping = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** `top` over `base`, into keepalive scopes and the heartbeat block: each value `top` gives wins. */
function overlay<T extends object>(base: T, top: T): T {
  const out = { ...base } as Record<string, unknown>
  for (const [key, value] of Object.entries(top)) {
    if (value === undefined) continue
    const under = out[key]
    out[key] = isMapping(value) && isMapping(under) ? overlay(under, value) : value
  }
  return out as T
}

function adminFrom(cli: CliInput, file: AppConfigFileAdmin, keyPrefix: string) {
  if (cli.admin !== undefined) return resolveAdmin({ listen: cli.admin, token: cli.adminToken }, { listen: '--admin', token: '--admin-token' })
  if (cli.adminToken !== undefined) throw new ConfigError('--admin-token', 'has no effect without --admin')
  return file === undefined ? undefined : resolveAdmin(file, { listen: `${keyPrefix}admin`, token: `${keyPrefix}admin.token` })
}

/** --pid-file, else the file's `pidFile:`, each error naming the one used. */
function pidFileFrom(cli: CliInput, file: string | undefined, keyPrefix: string): PidFile | undefined {
  if (cli.pidFile !== undefined) return new PidFile(cli.pidFile, '--pid-file')
  return file === undefined ? undefined : new PidFile(file, `${keyPrefix}pidFile`)
}

/** The most workers: far past any core count a proxy host has, short of a typo's thousands of threads. */
export const MAX_WORKERS = 64

/** --workers, else the file's `workers:`, else 1; 'auto': one per core this process may use. */
function workersFrom(cli: CliInput, file: string | number | undefined, keyPrefix: string): number {
  const [value, key] = cli.workers !== undefined ? [cli.workers, '--workers'] : [file, `${keyPrefix}workers`]
  if (value === undefined) return 1
  if (value === 'auto') return Math.min(availableParallelism(), MAX_WORKERS)
  const n = typeof value === 'number' ? value : /^\d+$/.test(value.trim()) ? Number(value) : NaN
  if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS) throw new ConfigError(key, `must be a whole number from 1 to ${MAX_WORKERS}, or auto (one per core) (got ${JSON.stringify(value)})`)
  return n
}

const WILDCARD = new Set([undefined, '0.0.0.0', '::'])

/**
 * Two routes cannot listen on the same port of the same address, nor one on all interfaces
 * (a bare port, 0.0.0.0, ::) and another on one of them: the second bind would fail at start.
 * Port 0 (a port of the kernel's choosing) never clashes.
 */
function checkListenClashes(routes: ProxyOptions[]): void {
  routes.forEach((route, i) => {
    const { host, port } = route.listen
    if (port === 0) return
    const earlier = routes.slice(0, i).find((r) => r.listen.port === port && (r.listen.host === host || WILDCARD.has(r.listen.host) || WILDCARD.has(host)))
    if (earlier !== undefined) {
      throw new ConfigError(route.listenKey, `${formatEndpoint(host, port)} clashes with route "${earlier.name}" (${formatEndpoint(earlier.listen.host, earlier.listen.port)}): each route needs its own address`)
    }
  })
}

type AppConfigFileAdmin = string | { listen: string; token?: string | undefined } | undefined

/** `loaded`: the file already read (off the event loop, on reload); else it is read here. */
export function resolveAppConfig(cli: CliInput, loaded?: ConfigFile): AppConfig {
  if (cli.config === undefined) {
    const options = resolveOptions(cli)
    return { routes: [options], admin: adminFrom(cli, undefined, ''), shutdownGrace: options.shutdownGrace, log: resolveLog(cli.log ?? {}, undefined), pidFile: pidFileFrom(cli, undefined, ''), workers: workersFrom(cli, undefined, '') }
  }
  const path = cli.config
  const file = loaded ?? loadConfigFile(path)
  const overrides = routeFlags(cli)
  const overridden = givenSettings(overrides)
  if (overridden.length > 0 && file.routes.length > 1) {
    throw new ConfigError(flagOf(overridden[0]![0]), `overrides a single route only; ${path} has ${file.routes.length} routes: set it there`)
  }
  const shutdownGrace = toSeconds(cli.shutdownGrace, '--shutdown-grace') ?? file.shutdownGrace ?? DEFAULTS.shutdownGrace
  const routes = file.routes.map((route, i) => {
    const raw: RawOptions = { ...overlay(rawFromRoute(route, shutdownGrace), overrides), native: cli.native }
    // A value given on the command line is named by its flag, one from the file by its key.
    const keyOf: KeyNamer = (key) => (valueAt(overrides, key) !== undefined ? flagOf(key) : `${path}: routes[${i}].${routeKeyOf(key, route)}`)
    return resolveOptions(raw, keyOf)
  })
  const names = routes.map((r) => r.name)
  const twice = names.findIndex((n, i) => names.indexOf(n) !== i)
  if (twice >= 0) throw new ConfigError(`${path}: routes[${twice}].name`, `"${names[twice]}" names two routes; route names must be unique`)
  checkListenClashes(routes)
  return { routes, admin: adminFrom(cli, file.admin, `${path}: `), shutdownGrace: routes[0]!.shutdownGrace, log: resolveLog(cli.log ?? {}, file.log), pidFile: pidFileFrom(cli, file.pidFile, `${path}: `), workers: workersFrom(cli, file.workers, `${path}: `) }
}
