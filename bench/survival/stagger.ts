// Idle times for the survival curve: n sessions idle for n different times, evenly spread over
// (0, max], so that checking each once after its own idle time samples "alive after t seconds
// idle" across the whole range in one run. `ka-proxy probe` spreads its connections the same way;
// this local copy is to be replaced by its function once both live on one branch.

/** `count` idle times spread evenly over (0, max], shortest first: max/count, 2·max/count, …, max. */
export function spreadIdleTimes(count: number, max: number): number[] {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`spreadIdleTimes: count must be a positive integer (got ${count})`)
  if (!(max > 0)) throw new RangeError(`spreadIdleTimes: max must be positive (got ${max})`)
  return Array.from({ length: count }, (_, i) => max * (i + 1) / count)
}
