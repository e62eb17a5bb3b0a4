// What a leg's keepalive is: the three kernel knobs plus TCP_USER_TIMEOUT, with the
// kernel's limits and the rule that keeps the two abort paths consistent.

import { ConfigError } from '../errors.ts'

/** Seconds, as the kernel takes them. `userTimeout` 0 means TCP_USER_TIMEOUT is off. */
export interface KeepaliveSettings {
  idle: number
  interval: number
  count: number
  userTimeout: number
}

/** Partial settings as a user writes them; `userTimeout` undefined means "derive it". */
export type KeepaliveInput = Partial<KeepaliveSettings>

export const LIMITS = {
  idle: { min: 1, max: 32767 },
  interval: { min: 1, max: 32767 },
  count: { min: 1, max: 127 },
  // The kernel takes an int of milliseconds.
  userTimeout: { min: 0, max: Math.floor(0x7fffffff / 1000) },
} as const

/**
 * Defaults for the NAT use case: the first probe after 60 s stays under the idle timeout
 * of every common NAT and load balancer (AWS NAT 350 s, Azure LB 240 s, most home routers
 * and firewalls 300 s or more), and a dead peer is known after 60 + 10 × 6 = 120 s instead
 * of the kernel's 7200 + 75 × 9 = 7875 s.
 */
export const DEFAULT_KEEPALIVE: Readonly<Omit<KeepaliveSettings, 'userTimeout'>> = {
  idle: 60,
  interval: 10,
  count: 6,
}

/** Seconds from the last sign of life until keepalive declares the peer dead. */
export function detectionBound(s: Pick<KeepaliveSettings, 'idle' | 'interval' | 'count'>): number {
  return s.idle + s.interval * s.count
}

/**
 * Fills in defaults and derives TCP_USER_TIMEOUT. When TCP_USER_TIMEOUT is set the kernel
 * uses it instead of TCP_KEEPCNT to abort, and it is the only bound on data that is sent
 * but never acknowledged (keepalive does not probe then), so by default it equals the
 * keepalive detection bound: both cases are detected in the same time.
 */
/** TCP_USER_TIMEOUT as the kernel takes it (ms; 0 = the kernel's own rule), for the native helper's calls. */
export function userTimeoutMs(s: Pick<KeepaliveSettings, 'userTimeout'>): number {
  return Math.round(s.userTimeout * 1000)
}

export function resolveKeepalive(input: KeepaliveInput, base: KeepaliveInput = {}): KeepaliveSettings {
  const idle = input.idle ?? base.idle ?? DEFAULT_KEEPALIVE.idle
  const interval = input.interval ?? base.interval ?? DEFAULT_KEEPALIVE.interval
  const count = input.count ?? base.count ?? DEFAULT_KEEPALIVE.count
  const userTimeout = input.userTimeout ?? base.userTimeout ?? detectionBound({ idle, interval, count })
  return { idle, interval, count, userTimeout }
}

/** Throws ConfigError naming `keyOf(field)` (a flag or a config path) for the first bad value. */
export function validateKeepalive(s: KeepaliveSettings, keyOf: (field: keyof KeepaliveSettings) => string): void {
  for (const field of ['idle', 'interval', 'count'] as const) {
    const { min, max } = LIMITS[field]
    const value = s[field]
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new ConfigError(keyOf(field), `must be a whole number from ${min} to ${max} (got ${String(value)})`)
    }
  }
  const { min, max } = LIMITS.userTimeout
  // The kernel takes milliseconds: a value under one would silently read back as 0 (off).
  const tooFine = s.userTimeout > 0 && s.userTimeout < 0.001
  if (!Number.isFinite(s.userTimeout) || s.userTimeout < min || s.userTimeout > max || tooFine) {
    throw new ConfigError(keyOf('userTimeout'), `must be ${min} (off) or from 0.001 to ${max} seconds (got ${String(s.userTimeout)})`)
  }
}

export function describeKeepalive(s: KeepaliveSettings): string {
  const ut = s.userTimeout > 0 ? `, user timeout ${s.userTimeout} s` : ', no user timeout'
  return `idle ${s.idle} s, interval ${s.interval} s × ${s.count} (dead after ${detectionBound(s)} s${ut})`
}
