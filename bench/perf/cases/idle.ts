// Idle scale: open many sessions as fast as the relay takes them (each proven end to end by a
// 1-byte echo), leave them idle, and read what the relay's processes hold for them. Memory is
// the growth of the proportional set size (PSS: pages shared by forked processes are split
// among them), divided by the sessions; kernel socket memory is not in it.

import { run, sleep } from '../../lab/exec.ts'
import { treeMemory } from '../procfs.ts'
import { chargedCpu, type PerfCase } from './case.ts'

/** Descriptors a single-process relay needs besides two per session. */
const SPARE_FDS = 100

/**
 * Sessions the idle case can hold: a single-process relay needs two descriptors per session,
 * and without CAP_SYS_RESOURCE no process can go beyond the hard RLIMIT_NOFILE.
 */
export async function idleSessionLimit(wanted: number): Promise<{ sessions: number, note: string | null }> {
  const hard = Number((await run('sh', ['-c', 'ulimit -Hn'])).stdout.trim())
  if (!Number.isFinite(hard)) return { sessions: wanted, note: null }
  const most = Math.floor((hard - SPARE_FDS) / 2)
  if (wanted <= most) return { sessions: wanted, note: null }
  return {
    sessions: most,
    note: `idle sessions capped at ${most.toLocaleString('en-US')} instead of ${wanted.toLocaleString('en-US')}: ` +
      `the hard descriptor limit here is ${hard} and a relay holds two per session`
  }
}

export const idleCase: PerfCase = {
  name: 'idle',
  title: 'idle sessions',
  headline: ['opensPerSec', 'sessions opened/s'],
  target: env => env.servers.echo,
  sessions: env => env.idleSessions,
  async measure(env, address, relayPid) {
    const count = env.idleSessions
    const before = relayPid === null ? null : treeMemory(relayPid)
    const { result: held, cpuSeconds } = await chargedCpu(relayPid, () => env.loadgen.open(address, count, env.settings.openWindow))
    try {
      const r = held.result
      if (r.failed > 0) throw new Error(`idle: ${r.failed} of ${count} sessions failed to open`)
      await sleep(env.settings.idleSettle * 1000)
      const metrics: Record<string, number> = { opensPerSec: r.opened / r.seconds, sessions: r.opened }
      if (relayPid !== null && before !== null) {
        const after = treeMemory(relayPid)
        metrics.bytesPerSession = (after.pss - before.pss) / count
        metrics.rssBytesPerSession = (after.rss - before.rss) / count
        metrics.relayProcesses = after.processes
        metrics.relayCpuUsPerOpen = (cpuSeconds * 1e6) / count
      }
      return metrics
    } finally {
      await held.close()
    }
  }
}
