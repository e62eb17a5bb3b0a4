// Repeated measurements reduced to what the table shows: the median and the range.

export interface Summary {
  median: number
  min: number
  max: number
  values: number[]
}

export function summarize(values: readonly number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, values: [...values] }
}

/** Per metric, the summary of its values over the measurements that have it. */
export function summarizeMetrics(measurements: ReadonlyArray<Record<string, number>>): Record<string, Summary> {
  const byMetric = new Map<string, number[]>()
  for (const m of measurements) {
    for (const [key, value] of Object.entries(m)) byMetric.set(key, [...(byMetric.get(key) ?? []), value])
  }
  return Object.fromEntries([...byMetric].map(([key, values]) => [key, summarize(values)]))
}
