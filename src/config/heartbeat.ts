// Heartbeat settings: one plain object, the same from the command line (--heartbeat*,
// --on-down) as under a route's `heartbeat` key in a config file. Defaults, then
// validation with errors naming the flag or key at fault (the caller says how to name it).

import { ConfigError } from '../errors.ts'
import { toSeconds } from './duration.ts'
import { formatEndpoint } from './endpoint.ts'

/** What to check, as resolved from the settings; src/heartbeat/ has one checker per type. */
export type CheckSpec =
  | { type: 'tcp' }
  | { type: 'pg' }
  | { type: 'redis' }
  | { type: 'http'; url: string }
  | { type: 'send'; send: Buffer; expect: Buffer }

/** The check URL for one target: {host} and {port} replaced by the target's. */
export function expandUrl(url: string, target: { host: string; port: number }): string {
  const host = formatEndpoint(target.host, target.port)
  return url.replaceAll('{host}', host.slice(0, host.lastIndexOf(':'))).replaceAll('{port}', String(target.port))
}

/** What happens to a target's sessions, and to new connections, when it is marked down. */
export type OnDown = 'kill' | 'drain' | 'keep'
export const ON_DOWN: readonly OnDown[] = ['kill', 'drain', 'keep']

/** As a user writes it: every field optional and not yet checked. */
export interface HeartbeatInput {
  /** tcp | pg | redis | send | an http:// or https:// URL ({host} and {port} name the target). */
  type?: unknown
  /** With type send: bytes to write, with \r \n \t \0 \\ \xHH escapes; none: the server speaks first. */
  send?: unknown
  /** With type send: the prefix of the reply that means up (same escapes). */
  expect?: unknown
  interval?: unknown
  timeout?: unknown
  fall?: unknown
  rise?: unknown
  onDown?: unknown
}

export type HeartbeatKey = keyof HeartbeatInput

export interface HeartbeatSettings {
  check: CheckSpec
  /** Seconds from the start of one check of a target to the start of the next. */
  interval: number
  /** Seconds a check may take before it counts as failed; at most `interval`. */
  timeout: number
  /** Failed checks in a row that mark an up target down. */
  fall: number
  /** Good checks in a row that mark a down target up. */
  rise: number
  onDown: OnDown
}

/**
 * HAProxy's interval, fall and rise (inter 2 s, fall 3, rise 2). A healthy server answers
 * a check in milliseconds, so 1 s of timeout is generous; a dead target is known within
 * 2 × 3 + 1 = 7 s. kill by default: the point of ka-proxy is to end dead sessions.
 */
export const HEARTBEAT_DEFAULTS = { interval: 2, timeout: 1, fall: 3, rise: 2, onDown: 'kill' } as const

/** The command-line flag behind each field. */
export const HEARTBEAT_FLAGS: Record<HeartbeatKey, string> = {
  type: '--heartbeat',
  send: '--heartbeat-send',
  expect: '--heartbeat-expect',
  interval: '--heartbeat-interval',
  timeout: '--heartbeat-timeout',
  fall: '--heartbeat-fall',
  rise: '--heartbeat-rise',
  onDown: '--on-down',
}

const SECONDS = { min: 0.01, max: 3600 }
const COUNT = { min: 1, max: 100 }

/**
 * Undefined when no heartbeat is configured. Throws ConfigError naming `keyOf(field)`, or
 * `keyOf()` for the object itself: a flag on the command line, a key path in a file.
 * `input` is unchecked: from a file it may be anything.
 */
export function resolveHeartbeat(raw: unknown, keyOf: (key?: HeartbeatKey) => string): HeartbeatSettings | undefined {
  if (raw === undefined || raw === null) return undefined
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(keyOf(), `expected a mapping with at least "type" (got ${JSON.stringify(raw)})`)
  const input = raw as HeartbeatInput
  const given = Object.keys(input).filter((k) => input[k as HeartbeatKey] !== undefined) as HeartbeatKey[]
  const unknown = given.find((k) => !(k in HEARTBEAT_FLAGS))
  if (unknown !== undefined) throw new ConfigError(keyOf(unknown), 'unknown key')
  if (input.type === undefined) {
    if (given.length === 0) return undefined
    throw new ConfigError(keyOf(given[0]!), `has no effect without ${keyOf('type')} (the check to run)`)
  }
  const check = parseCheck(input, keyOf)
  const interval = seconds(input.interval, HEARTBEAT_DEFAULTS.interval, keyOf('interval'))
  const timeout = seconds(input.timeout, Math.min(HEARTBEAT_DEFAULTS.timeout, interval), keyOf('timeout'))
  if (timeout > interval) {
    throw new ConfigError(keyOf('timeout'), `must not be longer than the interval (${interval} s): checks of a target never overlap`)
  }
  const onDown = input.onDown ?? HEARTBEAT_DEFAULTS.onDown
  if (!ON_DOWN.includes(onDown as OnDown)) {
    throw new ConfigError(keyOf('onDown'), `must be one of ${ON_DOWN.join(', ')} (got ${String(onDown)})`)
  }
  return {
    check,
    interval,
    timeout,
    fall: count(input.fall, HEARTBEAT_DEFAULTS.fall, keyOf('fall')),
    rise: count(input.rise, HEARTBEAT_DEFAULTS.rise, keyOf('rise')),
    onDown: onDown as OnDown,
  }
}

function parseCheck(input: HeartbeatInput, keyOf: (key?: HeartbeatKey) => string): CheckSpec {
  const key = keyOf('type')
  const type = typeof input.type === 'string' ? input.type.trim() : ''
  if (type !== 'send') {
    for (const k of ['send', 'expect'] as const) {
      if (input[k] !== undefined) throw new ConfigError(keyOf(k), `only goes with ${key} send`)
    }
  }
  if (/^https?:\/\//i.test(type)) {
    try {
      new URL(expandUrl(type, { host: 'localhost', port: 1 }))
    } catch {
      throw new ConfigError(key, `not a valid URL: ${type}`)
    }
    return { type: 'http', url: type }
  }
  if (type === 'tcp' || type === 'pg' || type === 'redis') return { type }
  if (type === 'send') {
    if (input.expect === undefined) throw new ConfigError(keyOf('expect'), `is required with ${key} send (the reply prefix that means up)`)
    const expect = decodeBytes(input.expect, keyOf('expect'))
    if (expect.length === 0) throw new ConfigError(keyOf('expect'), 'must not be empty')
    const send = input.send === undefined ? Buffer.alloc(0) : decodeBytes(input.send, keyOf('send'))
    return { type: 'send', send, expect }
  }
  throw new ConfigError(key, `must be tcp, pg, redis, send or an http(s):// URL (got ${JSON.stringify(input.type)})`)
}

function seconds(value: unknown, fallback: number, key: string): number {
  const v = toSeconds(value, key) ?? fallback
  if (!(v >= SECONDS.min && v <= SECONDS.max)) {
    throw new ConfigError(key, `must be a number of seconds from ${SECONDS.min} to ${SECONDS.max} (got ${v})`)
  }
  return v
}

function count(value: unknown, fallback: number, key: string): number {
  const v = value ?? fallback
  if (typeof v !== 'number' || !Number.isInteger(v) || v < COUNT.min || v > COUNT.max) {
    throw new ConfigError(key, `must be a whole number from ${COUNT.min} to ${COUNT.max} (got ${String(v)})`)
  }
  return v
}

const ESCAPES: Record<string, number> = { r: 0x0d, n: 0x0a, t: 0x09, '0': 0x00, '\\': 0x5c }

/** Text with C-style escapes to bytes: \r \n \t \0 \\ and \xHH; anything else is UTF-8. */
export function decodeBytes(value: unknown, key: string): Buffer {
  if (typeof value !== 'string') throw new ConfigError(key, `must be a string (got ${String(value)})`)
  const parts: Buffer[] = []
  let text = ''
  for (let i = 0; i < value.length; i++) {
    if (value[i] !== '\\') {
      text += value[i]
      continue
    }
    parts.push(Buffer.from(text, 'utf8'))
    text = ''
    const c = value[i + 1] ?? ''
    const hex = /^x([0-9a-fA-F]{2})/.exec(value.slice(i + 1))
    if (hex) {
      parts.push(Buffer.from([parseInt(hex[1]!, 16)]))
      i += 3
    } else if (c in ESCAPES) {
      parts.push(Buffer.from([ESCAPES[c]!]))
      i += 1
    } else {
      throw new ConfigError(key, `unknown escape "\\${c}" (use \\r \\n \\t \\0 \\\\ or \\xHH)`)
    }
  }
  parts.push(Buffer.from(text, 'utf8'))
  return Buffer.concat(parts)
}

export function describeHeartbeat(h: HeartbeatSettings): string {
  const what = h.check.type === 'http' ? h.check.url : h.check.type
  return (
    `${what} every ${h.interval} s, timeout ${h.timeout} s, down after ${h.fall} failed, up after ${h.rise} good, ` +
    `on-down ${h.onDown} (a dead target is known within ${detectionBound(h)} s)`
  )
}

/** Seconds from the moment a target stops answering until it is marked down, at most. */
export function detectionBound(h: Pick<HeartbeatSettings, 'interval' | 'timeout' | 'fall'>): number {
  return Math.round((h.interval * h.fall + h.timeout) * 1000) / 1000
}
