// Heartbeat settings: one plain object, the same from the command line (--heartbeat*,
// --on-down) as under a route's `heartbeat` key in a config file, checked by one zod schema.
// Defaults, then the checks of the combination, with errors naming the flag or key at fault
// (the caller says how to name it).

import { z } from 'zod'
import { ConfigError } from '../errors.ts'
import { formatEndpoint } from './endpoint.ts'
import { duration, parseWith } from './validate.ts'

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

/** tcp, pg, redis, send, or an http(s):// URL (trimmed); the schema's output checks again the same. */
const checkType = z.unknown().transform((value, ctx) => {
  const type = typeof value === 'string' ? value.trim() : ''
  if (type === 'tcp' || type === 'pg' || type === 'redis' || type === 'send') return type
  if (/^https?:\/\//i.test(type)) {
    try {
      new URL(expandUrl(type, { host: 'localhost', port: 1 }))
      return type
    } catch {
      ctx.addIssue({ code: 'custom', message: `not a valid URL: ${type}` })
      return z.NEVER
    }
  }
  ctx.addIssue({ code: 'custom', message: `must be tcp, pg, redis, send or an http(s):// URL (got ${JSON.stringify(value)})` })
  return z.NEVER
})

/** Text with escapes (see decodeBytes), kept as written: the resolver decodes it. */
const escapedBytes = (canBeEmpty: boolean) =>
  z.unknown().transform((value, ctx) => {
    const decoded = bytesOf(value)
    const problem = typeof decoded === 'string' ? decoded : !canBeEmpty && decoded.length === 0 ? 'must not be empty' : undefined
    if (problem === undefined) return value as string
    ctx.addIssue({ code: 'custom', message: problem })
    return z.NEVER
  })

const checkSeconds = duration(
  z.number().refine((v) => v >= SECONDS.min && v <= SECONDS.max, {
    error: (issue) => `must be a number of seconds from ${SECONDS.min} to ${SECONDS.max} (got ${String(issue.input)})`,
  }),
)

const checkCount = z.custom<number>((v) => Number.isInteger(v) && (v as number) >= COUNT.min && (v as number) <= COUNT.max, {
  error: (issue) => `must be a whole number from ${COUNT.min} to ${COUNT.max} (got ${String(issue.input)})`,
})

const onDown = z.custom<OnDown>((v) => ON_DOWN.includes(v as OnDown), {
  error: (issue) => `must be one of ${ON_DOWN.join(', ')} (got ${String(issue.input)})`,
})

/**
 * Each field of the heartbeat block, the same for a config file's `heartbeat:` and for the
 * --heartbeat* flags; what depends on several fields (a type to go with them, send/expect only
 * with send, timeout within interval) is checked by resolveHeartbeat, which names both keys.
 */
export const heartbeatSchema = z
  .custom<object>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), {
    error: (issue) => `expected a mapping with at least "type" (got ${JSON.stringify(issue.input)})`,
  })
  .pipe(
    z.strictObject({
      type: checkType.optional(),
      send: escapedBytes(true).optional(),
      expect: escapedBytes(false).optional(),
      interval: checkSeconds.optional(),
      timeout: checkSeconds.optional(),
      fall: checkCount.optional(),
      rise: checkCount.optional(),
      onDown: onDown.optional(),
    } satisfies Record<HeartbeatKey, z.ZodType>),
  )

const HEARTBEAT_KEYS = Object.keys(HEARTBEAT_FLAGS) as HeartbeatKey[]

/**
 * Undefined when no heartbeat is configured. Throws ConfigError naming `keyOf(field)`, or
 * `keyOf()` for the block itself: a flag on the command line, a key path in a file.
 * `raw` is unchecked: from a file it may be anything.
 */
export function resolveHeartbeat(raw: unknown, keyOf: (key?: string) => string): HeartbeatSettings | undefined {
  if (raw === undefined || raw === null) return undefined
  const input = parseWith(heartbeatSchema, raw, (path) => keyOf(path.length === 0 ? undefined : String(path[0])))
  const given = HEARTBEAT_KEYS.filter((k) => input[k] !== undefined)
  if (input.type === undefined) {
    if (given.length === 0) return undefined
    throw new ConfigError(keyOf(given[0]), `has no effect without ${keyOf('type')} (the check to run)`)
  }
  const interval = input.interval ?? HEARTBEAT_DEFAULTS.interval
  const timeout = input.timeout ?? Math.min(HEARTBEAT_DEFAULTS.timeout, interval)
  const check = checkOf(input, keyOf)
  if (timeout > interval) {
    throw new ConfigError(keyOf('timeout'), `must not be longer than the interval (${interval} s): checks of a target never overlap`)
  }
  return {
    check,
    interval,
    timeout,
    fall: input.fall ?? HEARTBEAT_DEFAULTS.fall,
    rise: input.rise ?? HEARTBEAT_DEFAULTS.rise,
    onDown: input.onDown ?? HEARTBEAT_DEFAULTS.onDown,
  }
}

function checkOf(input: z.output<typeof heartbeatSchema>, keyOf: (key?: string) => string): CheckSpec {
  const type = input.type!
  if (type !== 'send') {
    for (const k of ['send', 'expect'] as const) {
      if (input[k] !== undefined) throw new ConfigError(keyOf(k), `only goes with ${keyOf('type')} send`)
    }
  }
  if (type === 'tcp' || type === 'pg' || type === 'redis') return { type }
  if (type !== 'send') return { type: 'http', url: type }
  if (input.expect === undefined) throw new ConfigError(keyOf('expect'), `is required with ${keyOf('type')} send (the reply prefix that means up)`)
  return { type: 'send', send: decodeBytes(input.send ?? '', keyOf('send')), expect: decodeBytes(input.expect, keyOf('expect')) }
}

const ESCAPES: Record<string, number> = { r: 0x0d, n: 0x0a, t: 0x09, '0': 0x00, '\\': 0x5c }

/** Text with C-style escapes to bytes: \r \n \t \0 \\ and \xHH; anything else is UTF-8. A string says what is wrong. */
function bytesOf(value: unknown): Buffer | string {
  if (typeof value !== 'string') return `must be a string (got ${String(value)})`
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
      return `unknown escape "\\${c}" (use \\r \\n \\t \\0 \\\\ or \\xHH)`
    }
  }
  parts.push(Buffer.from(text, 'utf8'))
  return Buffer.concat(parts)
}

/** bytesOf, or a ConfigError naming `key`. */
export function decodeBytes(value: unknown, key: string): Buffer {
  const bytes = bytesOf(value)
  if (typeof bytes === 'string') throw new ConfigError(key, bytes)
  return bytes
}

/**
 * Resolved settings written back as a user would (resolveHeartbeat gives them back): an upgrade
 * hands a removed route's settings over in this form. Bytes to send and expect go as \xHH each.
 */
export function heartbeatInputOf(h: HeartbeatSettings): HeartbeatInput {
  const { check } = h
  const escaped = (b: Buffer): string => [...b].map((x) => `\\x${x.toString(16).padStart(2, '0')}`).join('')
  return {
    type: check.type === 'http' ? check.url : check.type,
    ...(check.type === 'send' && { send: escaped(check.send), expect: escaped(check.expect) }),
    interval: h.interval,
    timeout: h.timeout,
    fall: h.fall,
    rise: h.rise,
    onDown: h.onDown,
  }
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
