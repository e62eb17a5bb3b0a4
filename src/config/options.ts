// The proxy's options: defaults, resolution of per-leg keepalive, validation that names
// the flag at fault. Everything downstream receives a complete, checked ProxyOptions.

import { ConfigError } from '../errors.ts'
import {
  resolveKeepalive,
  validateKeepalive,
  type KeepaliveInput,
  type KeepaliveSettings,
} from '../keepalive/settings.ts'
import { parseListen, parseTargets, type Endpoint } from './endpoint.ts'
import { HEARTBEAT_FLAGS, resolveHeartbeat, type HeartbeatInput, type HeartbeatSettings } from './heartbeat.ts'

export interface ProxyOptions {
  listen: Endpoint
  /** In order of preference; more than one only matters with heartbeats or round robin. */
  targets: Array<Endpoint & { host: string }>
  balance: Balance
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
}

/** Which healthy target a new connection goes to: the first listed, or each in turn. */
export type Balance = 'first' | 'roundrobin'
const BALANCE: readonly Balance[] = ['first', 'roundrobin']

export const DEFAULTS = {
  connectTimeout: 10,
  halfCloseTimeout: 60,
  flushTimeout: 10,
  shutdownGrace: 10,
} as const

/** Values as the CLI hands them over; undefined means "not given". */
export interface RawOptions {
  listen?: unknown
  target?: unknown
  idle?: number
  interval?: number
  count?: number
  userTimeout?: number
  clientIdle?: number
  clientInterval?: number
  clientCount?: number
  clientUserTimeout?: number
  targetIdle?: number
  targetInterval?: number
  targetCount?: number
  targetUserTimeout?: number
  connectTimeout?: number
  halfCloseTimeout?: number
  flushTimeout?: number
  shutdownGrace?: number
  native?: boolean
  balance?: unknown
  /** The same object a config file's route carries under `heartbeat`. */
  heartbeat?: HeartbeatInput
}

const FLAG_OF_FIELD: Record<keyof KeepaliveSettings, string> = {
  idle: 'idle',
  interval: 'interval',
  count: 'count',
  userTimeout: 'user-timeout',
}

function legInput(raw: RawOptions, leg: 'client' | 'target'): KeepaliveInput {
  const pick = (field: keyof KeepaliveSettings): number | undefined => {
    const key = `${leg}${field[0]!.toUpperCase()}${field.slice(1)}` as keyof RawOptions
    return raw[key] as number | undefined
  }
  return { idle: pick('idle'), interval: pick('interval'), count: pick('count'), userTimeout: pick('userTimeout') }
}

/** Names the flag that set a field: the per-leg override when given, else the shared one. */
function flagFor(raw: RawOptions, leg: 'client' | 'target', field: keyof KeepaliveSettings): string {
  const override = legInput(raw, leg)[field]
  return override !== undefined ? `--${leg}-${FLAG_OF_FIELD[field]}` : `--${FLAG_OF_FIELD[field]}`
}

function checkNumbers(raw: RawOptions): void {
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value === 'number' && Number.isNaN(value)) {
      throw new ConfigError(`--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`, 'must be a number')
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

export function resolveOptions(raw: RawOptions): ProxyOptions {
  checkNumbers(raw)
  if (raw.target === undefined) throw new ConfigError('--target', 'is required (host:port of the server to relay to)')
  if (raw.listen === undefined) throw new ConfigError('--listen', 'is required ([host:]port to accept clients on)')
  const balance = raw.balance ?? 'first'
  if (!BALANCE.includes(balance as Balance)) throw new ConfigError('--balance', `must be one of ${BALANCE.join(', ')} (got ${String(balance)})`)
  const shared: KeepaliveInput = {
    idle: raw.idle,
    interval: raw.interval,
    count: raw.count,
    userTimeout: raw.userTimeout,
  }
  const keepalive = {
    client: resolveKeepalive(legInput(raw, 'client'), shared),
    target: resolveKeepalive(legInput(raw, 'target'), shared),
  }
  for (const leg of ['client', 'target'] as const) {
    validateKeepalive(keepalive[leg], (field) => flagFor(raw, leg, field))
  }
  return {
    listen: parseListen(raw.listen),
    targets: parseTargets(raw.target),
    balance: balance as Balance,
    heartbeat: resolveHeartbeat(raw.heartbeat, (key = 'type') => HEARTBEAT_FLAGS[key]),
    keepalive,
    connectTimeout: seconds(raw.connectTimeout, DEFAULTS.connectTimeout, '--connect-timeout', 0.001),
    halfCloseTimeout: seconds(raw.halfCloseTimeout, DEFAULTS.halfCloseTimeout, '--half-close-timeout', 0.001),
    flushTimeout: seconds(raw.flushTimeout, DEFAULTS.flushTimeout, '--flush-timeout', 0.001),
    shutdownGrace: seconds(raw.shutdownGrace, DEFAULTS.shutdownGrace, '--shutdown-grace', 0),
    native: raw.native ?? true,
  }
}
