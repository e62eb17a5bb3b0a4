// Bulk throughput: BYTES through the relay on one stream, or split over several at once, from
// client to server (up: the client leg is read) or from server to client (down: the target leg
// is read). Up, the clock stops when the sink's count of received bytes is back, and the count
// must match; down, when the last byte has arrived.

import type { CaseName } from '../options.ts'
import { chargedCpu, type PerfCase } from './case.ts'

const GIB = 1024 ** 3

export function bulkCase(name: CaseName, parallel: boolean, direction: 'up' | 'down'): PerfCase {
  return {
    name,
    title: `bulk ${direction === 'up' ? 'client → server' : 'server → client'}, ${parallel ? 'parallel streams' : 'one stream'}`,
    headline: ['MBps', 'MB/s'],
    target: env => (direction === 'up' ? env.servers.sink : env.servers.source),
    sessions: env => (parallel ? env.settings.streams : 1),
    async measure(env, address, relayPid) {
      const streams = parallel ? env.settings.streams : 1
      const bytes = env.settings.bulkBytes
      const { result: r, cpuSeconds } = await chargedCpu(relayPid, () => env.loadgen.bulk(address, streams, bytes, direction))
      if (r.errors > 0 || r.received !== r.bytes) {
        throw new Error(`bulk: ${r.received} of ${r.bytes} bytes arrived (${r.errors} streams failed)`)
      }
      return {
        MBps: r.bytes / r.seconds / 1e6,
        seconds: r.seconds,
        loadgenCpuSeconds: r.cpuSeconds,
        ...(relayPid === null ? {} : { relayCpuMsPerGiB: (cpuSeconds * 1000) / (r.bytes / GIB) })
      }
    }
  }
}
