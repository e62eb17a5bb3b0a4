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
import { HEARTBEAT_FLAGS, resolveHeartbeat, type HeartbeatInput, type HeartbeatSettings } from './heartbeat.ts'

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
  keepalive: { client: KeepaliveSettings; target: KeepaliveSettings }
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

/** Seconds, or a duration string as written ("30s", "5m", "1500ms"). */
type Duration = number | string

/** The fields that are times: each takes a number of seconds or a duration with a unit. */
const DURATION_FIELDS = [
  'idle', 'interval', 'userTimeout', 'clientIdle', 'clientInterval', 'clientUserTimeout',
  'targetIdle', 'targetInterval', 'targetUserTimeout', 'connectTimeout', 'halfCloseTimeout', 'flushTimeout', 'shutdownGrace',
] as const

type Seconds<T> = { [K in keyof T]: K extends (typeof DURATION_FIELDS)[number] ? number | undefined : T[K] }

/** Every time field in seconds; a bad duration is a ConfigError naming its flag or key. */
function inSeconds(raw: RawOptions, keyOf: KeyNamer): Seconds<RawOptions> {
  const out: Record<string, unknown> = { ...raw }
  for (const field of DURATION_FIELDS) out[field] = toSeconds(raw[field], keyOf(flagOf(field)))
  return out as Seconds<RawOptions>
}

const flagOf = (field: string): string => `--${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`

/** Values as the CLI hands them over; undefined means "not given". */
export interface RawOptions {
  name?: string
  listen?: unknown
  target?: unknown
  idle?: Duration
  interval?: Duration
  count?: number
  userTimeout?: Duration
  clientIdle?: Duration
  clientInterval?: Duration
  clientCount?: number
  clientUserTimeout?: Duration
  targetIdle?: Duration
  targetInterval?: Duration
  targetCount?: number
  targetUserTimeout?: Duration
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
  /** Named keepalive presets under the explicit values: shared, and per leg. */
  profile?: unknown
  clientProfile?: unknown
  targetProfile?: unknown
}

/**
 * Names the place a value came from, given its flag (`--client-idle`): the flag itself on
 * the command line, or the matching key path for a route from a config file.
 */
export type KeyNamer = (flag: string) => string
const asFlag: KeyNamer = (flag) => flag

const FLAG_OF_FIELD: Record<keyof KeepaliveSettings, string> = {
  idle: 'idle',
  interval: 'interval',
  count: 'count',
  userTimeout: 'user-timeout',
}

function legInput(raw: Seconds<RawOptions>, leg: 'client' | 'target'): KeepaliveInput {
  const pick = (field: keyof KeepaliveSettings): number | undefined => {
    const key = `${leg}${field[0]!.toUpperCase()}${field.slice(1)}` as keyof RawOptions
    return raw[key] as number | undefined
  }
  return { idle: pick('idle'), interval: pick('interval'), count: pick('count'), userTimeout: pick('userTimeout') }
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

/** Names the flag that set a field: the per-leg override when given, else the shared one. */
function flagFor(raw: Seconds<RawOptions>, leg: 'client' | 'target', field: keyof KeepaliveSettings): string {
  const override = legInput(raw, leg)[field]
  return override !== undefined ? `--${leg}-${FLAG_OF_FIELD[field]}` : `--${FLAG_OF_FIELD[field]}`
}

function checkNumbers(raw: RawOptions, keyOf: KeyNamer): void {
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value === 'number' && Number.isNaN(value)) {
      throw new ConfigError(keyOf(flagOf(key)), 'must be a number')
    }
  }
}

function seconds(value: number | undefined, fallback: number, key: string, min: number): number {
  const v = value ?? fallback
  if (!Number.isFinite(v) || v < min || v > 86400) {
    throw new ConfigError(key, `must be a number of seconds from ${min} to 86400 (got ${String(v)})`)
  }
  return v
}

export function resolveOptions(input: RawOptions, keyOf: KeyNamer = asFlag): ProxyOptions {
  checkNumbers(input, keyOf)
  const raw = inSeconds(input, keyOf)
  if (raw.target === undefined) throw new ConfigError(keyOf('--target'), 'is required (host:port of the server to relay to)')
  if (raw.listen === undefined) throw new ConfigError(keyOf('--listen'), 'is required ([host:]port to accept clients on)')
  const balance = raw.balance ?? 'first'
  if (!BALANCE.includes(balance as Balance)) throw new ConfigError(keyOf('--balance'), `must be one of ${BALANCE.join(', ')} (got ${String(balance)})`)
  const failback = raw.failback ?? 'manual'
  if (!FAILBACK.includes(failback as Failback)) throw new ConfigError(keyOf('--failback'), `must be one of ${FAILBACK.join(', ')} (got ${String(failback)})`)
  const shared = overProfile(raw.profile, keyOf('--profile'), {
    idle: raw.idle,
    interval: raw.interval,
    count: raw.count,
    userTimeout: raw.userTimeout,
  })
  const keepalive = {
    client: resolveKeepalive(overProfile(raw.clientProfile, keyOf('--client-profile'), legInput(raw, 'client')), shared),
    target: resolveKeepalive(overProfile(raw.targetProfile, keyOf('--target-profile'), legInput(raw, 'target')), shared),
  }
  for (const leg of ['client', 'target'] as const) {
    validateKeepalive(keepalive[leg], (field) => keyOf(flagFor(raw, leg, field)))
  }
  const maxConnections = raw.maxConnections
  if (maxConnections !== undefined && (!Number.isInteger(maxConnections) || maxConnections < 1)) {
    throw new ConfigError(keyOf('--max-connections'), `must be a whole number of at least 1 (got ${String(maxConnections)})`)
  }
  return {
    name: raw.name ?? String(raw.listen),
    listen: parseListen(raw.listen, keyOf('--listen')),
    listenKey: keyOf('--listen'),
    targets: parseTargets(raw.target, keyOf('--target')),
    balance: balance as Balance,
    failback: failback as Failback,
    heartbeat: resolveHeartbeat(raw.heartbeat, (key = 'type') => keyOf(HEARTBEAT_FLAGS[key])),
    keepalive,
    connectTimeout: seconds(raw.connectTimeout, DEFAULTS.connectTimeout, keyOf('--connect-timeout'), 0.001),
    halfCloseTimeout: seconds(raw.halfCloseTimeout, DEFAULTS.halfCloseTimeout, keyOf('--half-close-timeout'), 0.001),
    flushTimeout: seconds(raw.flushTimeout, DEFAULTS.flushTimeout, keyOf('--flush-timeout'), 0.001),
    shutdownGrace: seconds(raw.shutdownGrace, DEFAULTS.shutdownGrace, keyOf('--shutdown-grace'), 0),
    native: raw.native ?? true,
    maxConnections,
  }
}
