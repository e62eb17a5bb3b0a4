// A real client: pgbench's select-only transactions against the bench's PostgreSQL.

import { pgbench } from '../postgres.ts'
import { chargedCpu, type PerfCase } from './case.ts'

export const pgbenchCase: PerfCase = {
  name: 'pgbench',
  title: 'pgbench -S',
  headline: ['tps', 'TPS'],
  target(env) {
    if (env.postgres === null) throw new Error('pgbench: PostgreSQL is not running')
    return env.postgres
  },
  sessions: env => env.settings.pgbenchClients,
  async measure(env, address, relayPid) {
    const s = env.settings
    const { result: r, cpuSeconds } = await chargedCpu(relayPid, () => pgbench(address, s.pgbenchClients, s.pgbenchSeconds))
    if (r.failed > 0) throw new Error(`pgbench: ${r.failed} failed transactions`)
    return {
      tps: r.tps,
      latencyMs: r.latencyMs,
      ...(relayPid === null ? {} : { relayCpuUsPerTransaction: (cpuSeconds * 1e6) / r.transactions })
    }
  }
}
