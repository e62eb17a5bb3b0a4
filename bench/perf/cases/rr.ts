// Request/response: SIZE-byte ping-pong, each connection waiting for its echo before sending
// again. One connection gives latency; many give the relay's round trips per second.

import type { CaseName } from '../options.ts'
import { chargedCpu, type PerfCase } from './case.ts'

export function rrCase(name: CaseName, parallel: boolean): PerfCase {
  return {
    name,
    title: parallel ? 'ping-pong, many connections' : 'ping-pong, one connection',
    headline: parallel ? ['roundTripsPerSec', 'round trips/s'] : ['p50us', 'µs p50'],
    target: env => env.servers.echo,
    sessions: env => (parallel ? env.settings.rrConns : 1),
    async measure(env, address, relayPid) {
      const s = env.settings
      const conns = parallel ? s.rrConns : 1
      const { result: r, cpuSeconds } = await chargedCpu(relayPid, () => env.loadgen.rr(address, conns, s.rrSize, s.rrWarmup, s.rrSeconds))
      if (r.errors > 0 || r.roundTrips === 0) throw new Error(`ping-pong: ${r.errors} connection errors, ${r.roundTrips} round trips`)
      return {
        roundTripsPerSec: r.roundTrips / r.seconds,
        p50us: r.p50us,
        p99us: r.p99us,
        p999us: r.p999us,
        loadgenCpuSeconds: r.cpuSeconds,
        // CPU was read around the whole run, so it is divided by all of its round trips.
        ...(relayPid === null ? {} : { relayCpuUsPerRoundTrip: (cpuSeconds * 1e6) / r.allRoundTrips })
      }
    }
  }
}
