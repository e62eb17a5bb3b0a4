// Idle scale: open many sessions as fast as the relay takes them (each proven end to end by a
// 1-byte echo), leave them idle, and read what the relay's processes hold for them. Memory is
// the proportional set size (PSS: pages shared by forked processes are split among them); kernel
// socket memory is not in it. Sessions are opened in two halves and the figure per session is
// the growth over the second half: the first pays for one-time costs (a runtime's heap growing
// to its working size, code compiled on first use) that are not what another session costs.
// The growth over all sessions is kept too.
//
// The open rate and CPU per open are those of a relay that has run, as the ping-pong is measured
// after a warm-up: once the memory is read, the sessions are reset, `--warm-rounds` rounds (3) of
// as many are opened and reset unmeasured, and the next round is measured, all through the same
// process. V8 needs those rounds: on Node 24 and 26 ka-proxy's second round cost 3-4 µs more in
// user space than on 22, and after three more the lines are level (bench/README, "Open rate").
// A connection storm (a fleet restarting, a pool refilling after a failover) meets a proxy that
// has been running; the first sessions of a new process also pay for compiling the open path
// (ka-proxy's JavaScript) and for the kernel's first socket allocations (HAProxy's first round
// is slower too). The first round's rate and CPU are kept as rows of their own (`cold*`);
// `--no-reopen` measures that round only.
//
// Each round ends in a close storm: every session is reset at once, and the relay's CPU until it
// has closed them all is the CPU per session closed (a failover, a fleet stopping).

import { run, sleep } from '../../lab/exec.ts'
import type { HeldSessions } from '../loadgen.ts'
import { treeDescriptors, treeMemory, type TreeMemory } from '../procfs.ts'
import { chargedCpu, type PerfCase } from './case.ts'

/** Descriptors a single-process relay needs besides two per session. */
const SPARE_FDS = 100

/**
 * Sessions the idle case can hold: a single-process relay needs two descriptors per session,
 * and without CAP_SYS_RESOURCE no process can go beyond the hard RLIMIT_NOFILE.
 */
export async function idleSessionLimit(wanted: number, spare = SPARE_FDS): Promise<{ sessions: number, note: string | null }> {
  const hard = Number((await run('sh', ['-c', 'ulimit -Hn'])).stdout.trim())
  if (!Number.isFinite(hard)) return { sessions: wanted, note: null }
  const most = Math.floor((hard - spare) / 2)
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
    const halves = [Math.floor(count / 2), count - Math.floor(count / 2)]
    const memory = relayPid === null ? null : (): TreeMemory => treeMemory(relayPid)
    const before = memory?.()
    const descriptors = relayPid === null ? undefined : treeDescriptors(relayPid)
    const held: HeldSessions[] = []
    let mid: TreeMemory | undefined
    const metrics: Record<string, number> = { sessions: count }
    try {
      let seconds = 0
      let cpu = 0
      let coldUser = 0
      for (const half of halves) {
        mid = memory?.()
        const { result: h, cpuSeconds, userSeconds } = await chargedCpu(relayPid, () => env.loadgen.open(address, half, env.settings.openWindow))
        held.push(h)
        if (h.result.failed > 0) throw new Error(`idle: ${h.result.failed} of ${half} sessions failed to open`)
        seconds += h.result.seconds
        cpu += cpuSeconds
        coldUser += userSeconds
        await sleep(env.settings.idleSettle * 1000)
      }
      metrics.coldOpensPerSec = count / seconds
      if (memory !== null && before !== undefined && mid !== undefined) {
        const after = memory()
        metrics.bytesPerSession = (after.pss - mid.pss) / halves[1]!
        metrics.rssBytesPerSession = (after.rss - mid.rss) / halves[1]!
        metrics.growthBytesPerSession = (after.pss - before.pss) / count
        metrics.relayProcesses = after.processes
        metrics.coldCpuUsPerOpen = (cpu * 1e6) / count
      }
      const closing = await closeStorm(relayPid, descriptors, held.splice(0))
      if (!env.settings.reopen) {
        metrics.opensPerSec = metrics.coldOpensPerSec!
        if (metrics.coldCpuUsPerOpen !== undefined) {
          metrics.relayCpuUsPerOpen = metrics.coldCpuUsPerOpen
          metrics.relayUserUsPerOpen = (coldUser * 1e6) / count
        }
        if (relayPid !== null) Object.assign(metrics, closeMetrics(closing, count))
        return metrics
      }
    } finally {
      for (const h of held.splice(0)) await h.close()
    }
    // Every round after the first the same: opened, then reset at once. The last is measured;
    // those before it warm the relay.
    const reopen = async (round: number): Promise<{ h: HeldSessions, cpuSeconds: number, userSeconds: number, closing: { cpuSeconds: number, userSeconds: number } }> => {
      await sleep(env.settings.idleSettle * 1000)
      const { result: h, cpuSeconds, userSeconds } = await chargedCpu(relayPid, () => env.loadgen.open(address, count, env.settings.openWindow))
      const closing = await closeStorm(relayPid, descriptors, [h])
      if (h.result.failed > 0) throw new Error(`idle: ${h.result.failed} of ${count} sessions failed to open again (round ${round})`)
      return { h, cpuSeconds, userSeconds, closing }
    }
    for (let round = 2; round < 2 + env.settings.warmRounds; round++) await reopen(round)
    const { h, cpuSeconds, userSeconds, closing } = await reopen(2 + env.settings.warmRounds)
    metrics.opensPerSec = count / h.result.seconds
    if (relayPid !== null) {
      metrics.relayCpuUsPerOpen = (cpuSeconds * 1e6) / count
      metrics.relayUserUsPerOpen = (userSeconds * 1e6) / count
      Object.assign(metrics, closeMetrics(closing, count))
    }
    return metrics
  }
}

/**
 * Resets every session held at once (as a target's failover does to a pool's connections) and
 * returns the relay's CPU seconds, and of them those in user space, from then until it has closed
 * them all (see `released`): what tearing a session down costs, both legs closed and, for
 * ka-proxy, its one log line written.
 */
async function closeStorm(relayPid: number | null, before: number | undefined, held: HeldSessions[]): Promise<{ cpuSeconds: number, userSeconds: number }> {
  return await chargedCpu(relayPid, async () => {
    for (const h of held) await h.close()
    await released(relayPid, before)
  })
}

function closeMetrics(closing: { cpuSeconds: number, userSeconds: number }, count: number): Record<string, number> {
  return { relayCpuUsPerClose: (closing.cpuSeconds * 1e6) / count, relayUserUsPerClose: (closing.userSeconds * 1e6) / count }
}

/** How long a relay may take to close the sessions just reset (socat: thousands of processes exiting). */
const RELEASE_TIMEOUT_MS = 60_000

/**
 * Waits until the relay has closed the sessions just reset, so that as many can open again
 * within its descriptor limit: its processes hold no more descriptors than before they opened
 * (give or take SPARE_FDS). Throws, naming the count, past a minute.
 */
async function released(relayPid: number | null, before: number | undefined): Promise<void> {
  if (relayPid !== null && before !== undefined) {
    const deadline = Date.now() + RELEASE_TIMEOUT_MS
    let held = treeDescriptors(relayPid)
    while (held > before + SPARE_FDS) {
      if (Date.now() > deadline) throw new Error(`idle: the relay still holds ${held} descriptors ${RELEASE_TIMEOUT_MS / 1000} s after its sessions were reset (${before} before they opened)`)
      await sleep(100)
      held = treeDescriptors(relayPid)
    }
  }
}
