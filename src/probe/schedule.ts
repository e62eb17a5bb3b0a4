// Which idle times to try. Timeouts in the wild run from about 30 s (home routers) to hours
// (RFC 5382's 2 h 4 min), so a first sweep over a wide range grows geometrically: every step
// is the same fraction of the idle time, and a 45 s timeout is bracketed as tightly, relative
// to its size, as a 40 min one. A narrow range (a bracket being refined) is split evenly.
//
// The survival benchmark staggers its idle panel with the same function (spacing: even).

/** Wider than this ratio, a range is swept geometrically; narrower, evenly. */
const GEOMETRIC_ABOVE = 2

/** Idle times are planned to a hundredth of a second; timers are not finer than that under load. */
function hundredth(x: number): number {
  return Math.round(x * 100) / 100
}

export interface StaggerOptions {
  /** With `low` 0: the shortest idle worth measuring (default high / 512, at least 1 s). */
  first?: number
  /** auto: geometric over a wide range, even over a narrow one; even: always evenly spaced. */
  spacing?: 'auto' | 'even'
}

/**
 * `n` idle times in (low, high], in increasing order, the last one `high`. Over a wide range
 * they grow geometrically, otherwise (or with spacing 'even') they are evenly spaced. With
 * `low` 0 the geometric series starts at `first`, so a range (0, 1 h] starts at 7 s instead of
 * wasting points on fractions of a second. Even spacing over (0, max] gives max/n, 2·max/n, …
 * max: a survival curve sampled uniformly.
 */
export function staggerIdle(low: number, high: number, n: number, options: StaggerOptions = {}): number[] {
  if (!(high > low) || low < 0 || !Number.isInteger(n) || n < 1) {
    throw new RangeError(`staggerIdle: need 0 <= low < high and n >= 1 (got ${low}, ${high}, ${n})`)
  }
  let points: number[]
  if (options.spacing === 'even' || n === 1 || (low > 0 && high / low <= GEOMETRIC_ABOVE)) {
    points = Array.from({ length: n }, (_, i) => low + ((high - low) * (i + 1)) / n)
  } else if (low === 0) {
    const start = Math.min(high / 2, options.first ?? Math.max(1, high / 512))
    const ratio = (high / start) ** (1 / (n - 1))
    points = Array.from({ length: n }, (_, i) => start * ratio ** i)
  } else {
    const ratio = (high / low) ** (1 / n)
    points = Array.from({ length: n }, (_, i) => low * ratio ** (i + 1))
  }
  points[points.length - 1] = high
  return points.map(hundredth)
}

/**
 * `n` idle times strictly inside (low, high), evenly spaced: the next round of a bisection
 * that already knows `low` survived and `high` did not. With n points the bracket shrinks
 * n + 1 times in one round.
 */
export function splitInterval(low: number, high: number, n: number): number[] {
  if (!(high > low) || !Number.isInteger(n) || n < 1) {
    throw new RangeError(`splitInterval: need low < high and n >= 1 (got ${low}, ${high}, ${n})`)
  }
  const points = Array.from({ length: n }, (_, i) => hundredth(low + ((high - low) * (i + 1)) / (n + 1)))
  return points.filter((p, i) => p > low && p < high && p !== points[i - 1])
}

/** The bracket is fine enough when it is no wider than this: `floor` or 5 % of the timeout. */
export function resolutionAt(high: number, floor: number): number {
  return Math.max(floor, 0.05 * high)
}

/** How many points one round needs to bring (low, high) within the resolution, at most `max`. */
export function pointsNeeded(low: number, high: number, resolution: number, max: number): number {
  const needed = Math.ceil((high - low) / resolution) - 1
  return Math.max(1, Math.min(max, needed))
}
