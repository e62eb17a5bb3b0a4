// Durations as operators write them: a bare number is seconds (as the kernel's keepalive
// options and every older ka-proxy flag take them), or a number with a unit: 1500ms, 30s,
// 5m, 1h, 1d, and sums such as 1m30s. Everything downstream works in seconds.

import { ConfigError } from '../errors.ts'

const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy

/** Seconds for a duration, or undefined when `text` is not one. */
export function durationSeconds(text: string): number | undefined {
  const s = text.trim()
  // A bare number, negative too: the range check that follows says what is allowed.
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s)
  if (s === '') return undefined
  let total = 0
  let end = 0
  PART.lastIndex = 0
  for (let m = PART.exec(s); m !== null; m = PART.exec(s)) {
    total += Number(m[1]) * UNIT_SECONDS[m[2]!]!
    end = PART.lastIndex
  }
  // Rounded to the microsecond: 0.1 + 0.2 and 1500 × 0.001 come out as written.
  return end === s.length ? Math.round(total * 1e6) / 1e6 : undefined
}

export const DURATION_HINT = 'seconds, or a duration such as 1500ms, 30s, 5m, 1h'

/**
 * A number passes through (it is seconds); a string is parsed as a duration. Throws a
 * ConfigError naming `key` for anything else. undefined stays undefined.
 */
export function toSeconds(value: unknown, key: string): number | undefined {
  if (value === undefined) return undefined
  if (typeof value === 'number') {
    if (Number.isNaN(value)) throw new ConfigError(key, `must be a number of ${DURATION_HINT}`)
    return value
  }
  const seconds = typeof value === 'string' ? durationSeconds(value) : undefined
  if (seconds === undefined) throw new ConfigError(key, `must be a number of ${DURATION_HINT} (got ${JSON.stringify(value)})`)
  return seconds
}
