// The one validation system: values are checked by zod schemas (the config file's in
// schema.ts, the heartbeat block's in heartbeat.ts, which --heartbeat* flags go through too),
// and the first problem becomes a one-line ConfigError naming the flag or key path at fault.

import { z } from 'zod'
import { ConfigError } from '../errors.ts'
import { DURATION_HINT, durationSeconds } from './duration.ts'

export const whole = (min: number, max: number) => z.number().int().min(min).max(max)

/** A time: a number of seconds, or a string with units ("30s", "5m", "1500ms"), checked by `then`. */
export const duration = (then: z.ZodType<number, number>) =>
  z
    .union([z.number(), z.string()])
    .transform((value, ctx) => {
      const s = typeof value === 'number' ? value : durationSeconds(value)
      if (s !== undefined) return s
      ctx.addIssue({ code: 'custom', message: `must be a number of ${DURATION_HINT} (got ${JSON.stringify(value)})` })
      return z.NEVER
    })
    .pipe(then)
export const seconds = (min: number) => duration(z.number().min(min).max(86400))

/** `routes[1].targetKeepalive.idle` */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = ''
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : `${out === '' ? '' : '.'}${String(part)}`
  return out === '' ? '(top level)' : out
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing'
  // YAML's .nan, .inf and overflowing literals such as 1e309 (JSON would show them as null).
  if (typeof value === 'number' && !Number.isFinite(value)) return Number.isNaN(value) ? '.nan' : value > 0 ? '.inf' : '-.inf'
  if (Array.isArray(value)) return 'a list'
  if (value === null) return 'null'
  if (typeof value === 'object') return 'a mapping'
  return JSON.stringify(value)
}

/** One zod issue as one sentence: what was expected, what was found. */
function issueMessage(issue: z.core.$ZodIssue, input: unknown): string {
  switch (issue.code) {
    case 'unrecognized_keys':
      return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`
    case 'invalid_type':
      if (issue.expected === 'int') return `must be a whole number (got ${describe(input)})`
      if (issue.expected === 'number' && typeof input === 'number') return `must be a finite number (got ${describe(input)})`
      return `expected ${issue.expected === 'object' ? 'a mapping' : issue.expected === 'array' ? 'a list' : `a ${issue.expected}`} (got ${describe(input)})`
    case 'too_small':
      if (issue.origin === 'array') return `needs at least ${issue.minimum} entr${issue.minimum === 1 ? 'y' : 'ies'}`
      if (issue.origin === 'string') return issue.minimum === 1 ? 'must not be empty' : `must be at least ${issue.minimum} characters long`
      return `must be at least ${issue.minimum} (got ${describe(input)})`
    case 'too_big':
      return `must be at most ${issue.maximum} (got ${describe(input)})`
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => String(v)).join(', ')} (got ${describe(input)})`
    case 'invalid_union':
      if (typeof input === 'number' && !Number.isFinite(input)) return `must be a finite number (got ${describe(input)})`
      return `has the wrong type (got ${describe(input)})`
    default:
      return issue.message
  }
}

function valueAt(root: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let v: unknown = root
  for (const key of path) v = v != null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[key] : undefined
  return v
}

/** Parses with `schema`; the first problem becomes a ConfigError naming its path. */
export function parseWith<T>(schema: z.ZodType<T>, input: unknown, keyOf: (path: ReadonlyArray<PropertyKey>) => string = formatPath): T {
  const result = schema.safeParse(input)
  if (result.success) return result.data
  // A misspelt key explains a missing one better than the other way round.
  const issues = result.error.issues
  const issue = issues.find((i) => i.code === 'unrecognized_keys') ?? issues[0]!
  const path = issue.code === 'unrecognized_keys' && issue.keys.length === 1 ? [...issue.path, issue.keys[0]!] : issue.path
  const message = issueMessage(issue, valueAt(input, issue.path))
  throw new ConfigError(keyOf(path), issue.code === 'unrecognized_keys' && issue.keys.length === 1 ? 'unknown key' : message)
}
