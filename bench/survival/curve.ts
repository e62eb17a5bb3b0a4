// The idle-survival curve of one relay, from its sessions' checks (each session checked once,
// after its own idle time): the points the chart draws, and where the sessions started dying,
// which is the NAT's timeout T as measured through that relay.

import type { IdleCheck } from '../lab/index.ts'

/** Up to this many points per relay, one session each; more sessions are pooled into points. */
const MAX_POINTS = 50

export interface CurvePoint {
  /** Mean idle seconds of the point's sessions. */
  idle: number
  alive: number
  sessions: number
}

/** How many neighbouring sessions one point stands for, so that no relay has more than MAX_POINTS. */
export function sessionsPerPoint(sessions: number): number {
  return Math.max(1, Math.ceil(sessions / MAX_POINTS))
}

/** Consecutive checks (by idle time) pooled `perPoint` at a time: the fraction alive at each. */
export function curvePoints(checks: readonly IdleCheck[], perPoint: number): CurvePoint[] {
  const sorted = [...checks].sort((a, b) => a.idle - b.idle)
  const points: CurvePoint[] = []
  for (let i = 0; i < sorted.length; i += perPoint) {
    const pool = sorted.slice(i, i + perPoint)
    points.push({
      idle: pool.reduce((sum, c) => sum + c.idle, 0) / pool.length,
      alive: pool.filter(c => c.result === 'ok').length,
      sessions: pool.length
    })
  }
  return points
}

/** Where the sessions started dying: between the last idle time that survived before it and the first that did not. */
export interface FirstDeath {
  /** Idle seconds of the longest-idle session that survived before the first death (0 if none). */
  lastAlive: number
  /** Idle seconds of the first session found dead. */
  firstDead: number
  /** Sessions idle longer than `firstDead` that still survived (0 for a clean cut). */
  aliveAfter: number
}

/** The measured T of one relay's curve; null when every session survived. */
export function firstDeath(checks: readonly IdleCheck[]): FirstDeath | null {
  const sorted = [...checks].sort((a, b) => a.idle - b.idle)
  const i = sorted.findIndex(c => c.result !== 'ok')
  if (i < 0) return null
  return {
    lastAlive: i === 0 ? 0 : (sorted[i - 1] as IdleCheck).idle,
    firstDead: (sorted[i] as IdleCheck).idle,
    aliveAfter: sorted.slice(i + 1).filter(c => c.result === 'ok').length
  }
}
