// The proxy's options: defaults, resolution of per-leg keepalive, validation that names
// the flag at fault. Everything downstream receives a complete, checked ProxyOptions.

import { ConfigError } from '../errors.ts'
import { toSeconds } from './duration.ts'
import {
  resolveKeepalive,
  validateKeepalive,
  type KeepaliveInput,
  type KeepaliveSettings,
} from '../keepalive/settings.ts'
import { PROFILE_NAMES, PROFILES, type ProfileName } from '../keepalive/profiles.ts'
import { parseListen, parseTargets, type Endpoint } from './endpoint.ts'
import { resolveHeartbeat, type HeartbeatInput, type HeartbeatSettings } from './heartbeat.ts'
import { flagOf, givenSettings, LEGS, type KeepaliveScope, type KeyNamer, type Leg } from './keys.ts'

export interface ProxyOptions {
  /** The route's name in logs, metrics and the admin API; defaults to the listen address. */
  name: string
  listen: Endpoint
  /** What names the listen address in an error: the flag, or the file and key path. */
  listenKey: string
  /** In order of preference; more than one only matters with heartbeats or round robin. */
  targets: Array<Endpoint & { host: string }>
  balance: Balance
  /** With balance first: whether new connections return to the first target by themselves. */
  failback: Failback
  /** Application-level checks of every target; undefined: none, every target counts as up. */
  heartbeat: HeartbeatSettings | undefined
  keepalive: Record<Leg, KeepaliveSettings>
  /** Seconds until an unanswered connect to the target gives up. */
  connectTimeout: number
  /** Seconds a session may stay half-closed (one side sent FIN, the other did not). */
  halfCloseTimeout: number
  /** Seconds a surviving peer gets to take data still queued for it before it is reset. */
  flushTimeout: number
  /** Seconds sessions get to finish after SIGINT/SIGTERM before they are closed. */
  shutdownGrace: number
  /** false forces Node's setKeepAlive fallback instead of the native helper. */
  native: boolean
  /** Clients beyond this many open sessions are refused at once; undefined: no limit. */
  maxConnections: number | undefined
  /**
   * Connections the kernel queues before they are accepted (listen's backlog); undefined: the
   * system's most (net.core.somaxconn), which a storm of connects needs: a full queue turns
   * further SYNs into SYN cookies or drops.
   */
  backlog: number | undefined
}

/** Which healthy target a new connection goes to: the first listed, or each in turn. */
export type Balance = 'first' | 'roundrobin'
const BALANCE: readonly Balance[] = ['first', 'roundrobin']

/**
 * After new connections moved from a failed target to the next: auto, they go back to the first
 * as soon as it is up again; manual, they stay until that one fails too or the operator sends
 * SIGHUP. Manual is the default: a pg check passes on a standby as well, and an automatic return
 * can send writes to an old primary.
 */
export type Failback = 'auto' | 'manual'
export const FAILBACK: readonly Failback[] = ['auto', 'manual']

export const DEFAULTS = {
  connectTimeout: 10,
  halfCloseTimeout: 60,
  flushTimeout: 10,
  shutdownGrace: 10,
} as const

/** listen() takes an int; the kernel caps it at net.core.somaxconn anyway. */
export const MAX_BACKLOG = 2 ** 31 - 1

/** Seconds, or a duration string as written ("30s", "5m", "1500ms"). */
type Duration = number | string

/** One scope's keepalive as given: a profile, and explicit values on top of it. */
export interface KeepaliveRaw {
  profile?: unknown
  idle?: Duration
  interval?: Duration
  count?: number
  userTimeout?: Duration
}

/** Values as the CLI or a config file's route hands them over; undefined means "not given". */
export interface RawOptions {
  name?: string
  listen?: unknown
  target?: unknown
  /**
   * shared: both legs (--idle, a route's `keepalive:`); client and target: that leg only, over
   * the shared values (--client-idle, `clientKeepalive:`). See keys.ts for every name.
   */
  keepalive?: { [S in KeepaliveScope]?: KeepaliveRaw }
  connectTimeout?: Duration
  halfCloseTimeout?: Duration
  flushTimeout?: Duration
  shutdownGrace?: Duration
  native?: boolean
  balance?: unknown
  failback?: unknown
  /** The same object a config file's route carries under `heartbeat`. */
  heartbeat?: HeartbeatInput
  maxConnections?: number
  backlog?: number
}

/** The route-wide times; each takes a number of seconds or a duration with a unit. */
const TIMES = ['connectTimeout', 'halfCloseTimeout', 'flushTimeout', 'shutdownGrace'] as const

/**
 * One scope's keepalive in seconds, over its profile's values. A bad duration or an unknown
 * profile is a ConfigError naming its flag or key.
 */
function scopeInput(raw: RawOptions, scope: KeepaliveScope, keyOf: KeyNamer): KeepaliveInput {
  const given = raw.keepalive?.[scope] ?? {}
  const secondsOf = (field: 'idle' | 'interval' | 'userTimeout'): number | undefined => toSeconds(given[field], keyOf(['keepalive', scope, field]))
  const explicit = { idle: secondsOf('idle'), interval: secondsOf('interval'), count: given.count, userTimeout: secondsOf('userTimeout') }
  return overProfile(given.profile, keyOf(['keepalive', scope, 'profile']), explicit)
}

/** A profile's values, with the explicitly given ones on top. */
function overProfile(profile: unknown, key: string, explicit: KeepaliveInput): KeepaliveInput {
  if (profile === undefined) return explicit
  if (!PROFILE_NAMES.includes(profile as ProfileName)) {
    throw new ConfigError(key, `must be one of ${PROFILE_NAMES.join(', ')} (got ${String(profile)}); see ka-proxy profiles`)
  }
  const { idle, interval, count } = PROFILES[profile as ProfileName]
  const given = Object.fromEntries(Object.entries(explicit).filter(([, v]) => v !== undefined))
  return { idle, interval, count, ...given }
}

/** Both legs' settings: each leg's values over the shared ones, over the defaults; checked. */
function resolveLegs(raw: RawOptions, keyOf: KeyNamer): Record<Leg, KeepaliveSettings> {
  const shared = scopeInput(raw, 'shared', keyOf)
  const legs = Object.fromEntries(LEGS.map((leg) => [leg, resolveKeepalive(scopeInput(raw, leg, keyOf), shared)])) as Record<Leg, KeepaliveSettings>
  for (const leg of LEGS) {
    // Names the leg's own key when it was given, else the shared one the value came from.
    validateKeepalive(legs[leg], (field) => keyOf(['keepalive', raw.keepalive?.[leg]?.[field] !== undefined ? leg : 'shared', field]))
  }
  return legs
}

function checkNumbers(raw: RawOptions, keyOf: KeyNamer): void {
  for (const [path, value] of givenSettings(raw)) {
    if (typeof value === 'number' && Number.isNaN(value)) throw new ConfigError(keyOf(path), 'must be a number')
  }
}

function seconds(value: number | undefined, fallback: number, key: string, min: number): number {
  const v = value ?? fallback
  if (!Number.isFinite(v) || v < min || v > 86400) {
    throw new ConfigError(key, `must be a number of seconds from ${min} to 86400 (got ${String(v)})`)
  }
  return v
}

export function resolveOptions(raw: RawOptions, keyOf: KeyNamer = flagOf): ProxyOptions {
  checkNumbers(raw, keyOf)
  const time = Object.fromEntries(TIMES.map((field) => [field, toSeconds(raw[field], keyOf([field]))])) as Record<(typeof TIMES)[number], number | undefined>
  if (raw.target === undefined) throw new ConfigError(keyOf(['target']), 'is required (host:port of the server to relay to)')
  if (raw.listen === undefined) throw new ConfigError(keyOf(['listen']), 'is required ([host:]port to accept clients on)')
  const balance = raw.balance ?? 'first'
  if (!BALANCE.includes(balance as Balance)) throw new ConfigError(keyOf(['balance']), `must be one of ${BALANCE.join(', ')} (got ${String(balance)})`)
  const failback = raw.failback ?? 'manual'
  if (!FAILBACK.includes(failback as Failback)) throw new ConfigError(keyOf(['failback']), `must be one of ${FAILBACK.join(', ')} (got ${String(failback)})`)
  const keepalive = resolveLegs(raw, keyOf)
  const maxConnections = raw.maxConnections
  if (maxConnections !== undefined && (!Number.isInteger(maxConnections) || maxConnections < 1)) {
    throw new ConfigError(keyOf(['maxConnections']), `must be a whole number of at least 1 (got ${String(maxConnections)})`)
  }
  const backlog = raw.backlog
  if (backlog !== undefined && (!Number.isInteger(backlog) || backlog < 1 || backlog > MAX_BACKLOG)) {
    throw new ConfigError(keyOf(['backlog']), `must be a whole number from 1 to ${MAX_BACKLOG} (got ${String(backlog)})`)
  }
  return {
    name: raw.name ?? String(raw.listen),
    listen: parseListen(raw.listen, keyOf(['listen'])),
    listenKey: keyOf(['listen']),
    targets: parseTargets(raw.target, keyOf(['target'])),
    balance: balance as Balance,
    failback: failback as Failback,
    heartbeat: resolveHeartbeat(raw.heartbeat, (key = 'type') => keyOf(['heartbeat', key])),
    keepalive,
    connectTimeout: seconds(time.connectTimeout, DEFAULTS.connectTimeout, keyOf(['connectTimeout']), 0.001),
    halfCloseTimeout: seconds(time.halfCloseTimeout, DEFAULTS.halfCloseTimeout, keyOf(['halfCloseTimeout']), 0.001),
    flushTimeout: seconds(time.flushTimeout, DEFAULTS.flushTimeout, keyOf(['flushTimeout']), 0.001),
    shutdownGrace: seconds(time.shutdownGrace, DEFAULTS.shutdownGrace, keyOf(['shutdownGrace']), 0),
    native: raw.native ?? true,
    maxConnections,
    backlog,
  }
}
