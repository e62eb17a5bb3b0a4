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
import { formatEndpoint, parseListen, parseTarget, parseTargets, type Endpoint } from './endpoint.ts'
import { heartbeatInputOf, resolveHeartbeat, type HeartbeatInput, type HeartbeatSettings } from './heartbeat.ts'
import { flagOf, givenSettings, LEGS, type KeepaliveScope, type KeyNamer, type Leg } from './keys.ts'
import { readPairSecret } from './pair-secret.ts'

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
  /** Paired mode: this route is one end of a pair (src/pair/); undefined: a plain route. */
  pair: PairOptions | undefined
}

/**
 * One end of a pair. near: clients accepted on `listen` travel over a link to `endpoint` (the
 * far end), which names the target. far: pair links are accepted on `listen` (--pair-listen) and
 * their sessions go to `targets`.
 */
export interface PairOptions {
  role: 'near' | 'far'
  /** near: the far end to connect to; far: the address pair links are accepted on. */
  endpoint: Endpoint & { host?: string | undefined }
  /** The shared secret, read from `secretFile` (see config/pair-secret.ts). */
  secret: Buffer
  secretFile: string
  /** Seconds without a frame sent after which a heartbeat is sent; 3 x without one received: dead. */
  heartbeat: number
  /** Seconds a session waits for its link to come back before both ends reset it. */
  resumeWindow: number
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
  pairHeartbeat: 10,
  resumeWindow: 60,
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
  /** Paired mode (see PairOptions). */
  pairListen?: unknown
  pairConnect?: unknown
  pairSecretFile?: string
  pairHeartbeat?: Duration
  resumeWindow?: Duration
}

/** The route-wide times; each takes a number of seconds or a duration with a unit. */
const TIMES = ['connectTimeout', 'halfCloseTimeout', 'flushTimeout', 'shutdownGrace', 'pairHeartbeat', 'resumeWindow'] as const

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

type Times = Record<(typeof TIMES)[number], number | undefined>

/**
 * Which end of a pair the route is, if any, checked: a far end (pairListen) accepts pair links
 * instead of clients and names the target; a near end (pairConnect) accepts clients and sends
 * them to the far end instead of a target; both need the secret. Settings that only make sense
 * in one of the three shapes are refused in the others, naming the flag or key.
 */
function resolvePair(raw: RawOptions, keyOf: KeyNamer, time: Times): PairOptions | undefined {
  // Another setting named inside a message: its flag, or its key without the file's name again.
  const other = (key: 'pairListen' | 'pairConnect'): string => keyOf([key]).replace(/^.*: /, '')
  const far = raw.pairListen !== undefined
  const near = raw.pairConnect !== undefined
  if (!far && !near) {
    for (const key of ['pairSecretFile', 'pairHeartbeat', 'resumeWindow'] as const) {
      if (raw[key] !== undefined) throw new ConfigError(keyOf([key]), `has no effect without ${other('pairListen')} or ${other('pairConnect')}`)
    }
    if (raw.target === undefined) throw new ConfigError(keyOf(['target']), 'is required (host:port of the server to relay to)')
    if (raw.listen === undefined) throw new ConfigError(keyOf(['listen']), 'is required ([host:]port to accept clients on)')
    return undefined
  }
  if (far && near) throw new ConfigError(keyOf(['pairConnect']), `not with ${other('pairListen')}: a route is one end of a pair`)
  if (far && raw.listen !== undefined) throw new ConfigError(keyOf(['listen']), `not with ${other('pairListen')}: the far end accepts pair links, not clients`)
  if (far && raw.target === undefined) throw new ConfigError(keyOf(['target']), 'is required (host:port of the server the far end relays to)')
  if (near && raw.target !== undefined) throw new ConfigError(keyOf(['target']), `not with ${other('pairConnect')}: the far end names the target`)
  if (near && raw.listen === undefined) throw new ConfigError(keyOf(['listen']), 'is required ([host:]port to accept clients on)')
  const secretKey = keyOf(['pairSecretFile'])
  if (raw.pairSecretFile === undefined) throw new ConfigError(secretKey, `is required with ${other(far ? 'pairListen' : 'pairConnect')} (ka-proxy pair-key FILE writes one)`)
  const endpointKey = keyOf([far ? 'pairListen' : 'pairConnect'])
  return {
    role: far ? 'far' : 'near',
    endpoint: far ? parseListen(raw.pairListen, endpointKey) : parseTarget(raw.pairConnect, endpointKey),
    secret: readPairSecret(raw.pairSecretFile, secretKey),
    secretFile: raw.pairSecretFile,
    heartbeat: seconds(time.pairHeartbeat, DEFAULTS.pairHeartbeat, keyOf(['pairHeartbeat']), 0.05),
    resumeWindow: seconds(time.resumeWindow, DEFAULTS.resumeWindow, keyOf(['resumeWindow']), 0.1),
  }
}

export function resolveOptions(raw: RawOptions, keyOf: KeyNamer = flagOf): ProxyOptions {
  checkNumbers(raw, keyOf)
  const time = Object.fromEntries(TIMES.map((field) => [field, toSeconds(raw[field], keyOf([field]))])) as Times
  const pair = resolvePair(raw, keyOf, time)
  // The far end's listening address is its pair address; the near end's one target, the far end.
  const listenRaw = pair?.role === 'far' ? raw.pairListen : raw.listen
  const listenKey = keyOf([pair?.role === 'far' ? 'pairListen' : 'listen'])
  const targetRaw = pair?.role === 'near' ? raw.pairConnect : raw.target
  const targetKey = keyOf([pair?.role === 'near' ? 'pairConnect' : 'target'])
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
    name: raw.name ?? String(listenRaw),
    listen: parseListen(listenRaw, listenKey),
    listenKey,
    targets: parseTargets(targetRaw, targetKey),
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
    pair,
  }
}

/**
 * A plain route's resolved options written back as its config would give them (resolveOptions
 * gives the same options back): what an upgrade hands over for a route the new config no longer
 * has, whose sessions drain in the new process. The config format is what every release reads, so
 * this form outlives changes to ProxyOptions. Paired mode is not carried: its sessions do not move.
 */
export function rawOptionsOf(o: ProxyOptions): RawOptions {
  const { host, port } = o.listen
  return {
    name: o.name,
    listen: host === undefined ? String(port) : formatEndpoint(host, port),
    target: o.targets.map((t) => formatEndpoint(t.host, t.port)).join(','),
    balance: o.balance,
    failback: o.failback,
    heartbeat: o.heartbeat && heartbeatInputOf(o.heartbeat),
    keepalive: { client: { ...o.keepalive.client }, target: { ...o.keepalive.target } },
    connectTimeout: o.connectTimeout,
    halfCloseTimeout: o.halfCloseTimeout,
    flushTimeout: o.flushTimeout,
    shutdownGrace: o.shutdownGrace,
    native: o.native,
    maxConnections: o.maxConnections,
    backlog: o.backlog,
  }
}
