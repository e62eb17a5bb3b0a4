// From what the user gave (flags, KA_PROXY_* variables, a config file) to the checked
// AppConfig the proxy runs. Flags override the file for a one-route config; every error
// names where the bad value came from: the flag, or the file and key path.

import { resolveAdmin, type AdminOptions } from './admin.ts'
import { ConfigError } from '../errors.ts'
import { loadConfigFile } from './file.ts'
import { HEARTBEAT_FLAGS } from './heartbeat.ts'
import { DEFAULTS, resolveOptions, type KeyNamer, type ProxyOptions, type RawOptions } from './options.ts'
import { formatEndpoint } from './endpoint.ts'
import { toSeconds } from './duration.ts'
import type { ConfigFile, RouteConfig } from './schema.ts'
import { resolveLog, type LogOptions } from './log.ts'
import { PidFile } from '../pid-file.ts'

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
}

export interface CliInput extends RawOptions {
  config?: string
  admin?: string
  adminToken?: string
  /** --log-level, --log-format, --log-file: each given one beats the file's `log:`. */
  log?: Partial<LogOptions>
  /** --pid-file: beats the file's `pidFile:`. */
  pidFile?: string
}

const KEEPALIVE_FIELDS = new Set(['idle', 'interval', 'count', 'user-timeout', 'profile'])

const camel = (s: string): string => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())

/** The key path in a route for the value a flag sets: `--client-idle` -> `clientKeepalive.idle`. */
export function routePathOf(flag: string, route: RouteConfig): string {
  const name = flag.replace(/^--/, '')
  if (name === 'on-down') return 'heartbeat.onDown'
  if (name === 'heartbeat') return 'heartbeat.type'
  if (name.startsWith('heartbeat-')) return `heartbeat.${camel(name.slice('heartbeat-'.length))}`
  for (const leg of ['client', 'target'] as const) {
    const rest = name.slice(leg.length + 1)
    if (name.startsWith(`${leg}-`) && KEEPALIVE_FIELDS.has(rest)) return `${leg}Keepalive.${camel(rest)}`
  }
  if (name === 'profile') return route.keepalive?.profile !== undefined ? 'keepalive.profile' : 'profile'
  if (KEEPALIVE_FIELDS.has(name)) return `keepalive.${camel(name)}`
  return camel(name)
}

/** A route from a file, in the same shape the flags arrive in. */
function rawFromRoute(r: RouteConfig, shutdownGrace: number | undefined): RawOptions {
  const ka = r.keepalive ?? {}
  const client = r.clientKeepalive ?? {}
  const target = r.targetKeepalive ?? {}
  return {
    name: r.name,
    listen: r.listen,
    target: Array.isArray(r.target) ? r.target.join(',') : r.target,
    balance: r.balance,
    failback: r.failback,
    profile: ka.profile ?? r.profile,
    idle: ka.idle,
    interval: ka.interval,
    count: ka.count,
    userTimeout: ka.userTimeout,
    clientProfile: client.profile,
    clientIdle: client.idle,
    clientInterval: client.interval,
    clientCount: client.count,
    clientUserTimeout: client.userTimeout,
    targetProfile: target.profile,
    targetIdle: target.idle,
    targetInterval: target.interval,
    targetCount: target.count,
    targetUserTimeout: target.userTimeout,
    heartbeat: r.heartbeat as RawOptions['heartbeat'],
    maxConnections: r.maxConnections,
    connectTimeout: r.connectTimeout,
    halfCloseTimeout: r.halfCloseTimeout,
    flushTimeout: r.flushTimeout,
    shutdownGrace,
  }
}

const defined = <T extends object>(o: T): Partial<T> =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>

/** Route-level values given as flags (process-wide ones such as --native do not count). */
function routeFlagsGiven(cli: CliInput): Partial<RawOptions> {
  const { config: _c, admin: _a, adminToken: _t, native: _n, shutdownGrace: _g, log: _l, pidFile: _p, heartbeat, ...rest } = cli
  const hb = heartbeat ? defined(heartbeat) : {}
  return { ...defined(rest), ...(Object.keys(hb).length > 0 ? { heartbeat: hb } : {}) }
}

const HEARTBEAT_KEY_OF_FLAG = new Map(Object.entries(HEARTBEAT_FLAGS).map(([key, flag]) => [flag, key]))

/** Whether the value behind `flag` was given on the command line (else it came from the file). */
function cliGave(flag: string, overrides: Partial<RawOptions>): boolean {
  const hbKey = HEARTBEAT_KEY_OF_FLAG.get(flag)
  if (hbKey !== undefined) return (overrides.heartbeat as Record<string, unknown> | undefined)?.[hbKey] !== undefined
  return (overrides as Record<string, unknown>)[camel(flag.replace(/^--/, ''))] !== undefined
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
    return { routes: [options], admin: adminFrom(cli, undefined, ''), shutdownGrace: options.shutdownGrace, log: resolveLog(cli.log ?? {}, undefined), pidFile: pidFileFrom(cli, undefined, '') }
  }
  const path = cli.config
  const file = loaded ?? loadConfigFile(path)
  const overrides = routeFlagsGiven(cli)
  const overridden = Object.keys(overrides)
  if (overridden.length > 0 && file.routes.length > 1) {
    const flag = `--${overridden[0]!.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`
    throw new ConfigError(flag, `overrides a single route only; ${path} has ${file.routes.length} routes: set it there`)
  }
  const shutdownGrace = toSeconds(cli.shutdownGrace, '--shutdown-grace') ?? file.shutdownGrace ?? DEFAULTS.shutdownGrace
  const routes = file.routes.map((route, i) => {
    const fromFile = rawFromRoute(route, shutdownGrace)
    const raw: RawOptions = {
      ...fromFile,
      ...overrides,
      heartbeat: overrides.heartbeat || fromFile.heartbeat ? { ...(fromFile.heartbeat ?? {}), ...(overrides.heartbeat ?? {}) } : undefined,
      native: cli.native,
    }
    const keyOf: KeyNamer = (flag) => (cliGave(flag, overrides) ? flag : `${path}: routes[${i}].${routePathOf(flag, route)}`)
    return resolveOptions(raw, keyOf)
  })
  const names = routes.map((r) => r.name)
  const twice = names.findIndex((n, i) => names.indexOf(n) !== i)
  if (twice >= 0) throw new ConfigError(`${path}: routes[${twice}].name`, `"${names[twice]}" names two routes; route names must be unique`)
  checkListenClashes(routes)
  return { routes, admin: adminFrom(cli, file.admin, `${path}: `), shutdownGrace: routes[0]!.shutdownGrace, log: resolveLog(cli.log ?? {}, file.log), pidFile: pidFileFrom(cli, file.pidFile, `${path}: `) }
}
