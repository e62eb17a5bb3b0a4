// What a case of the performance bench is: the server it puts behind the relay, how many
// sessions the relay must hold, and one measurement through a given address, with the relay's
// process (null for the direct connection) to charge CPU and memory to.

import type { Endpoint } from '../../lab/ss.ts'
import type { LoadGenerator, Servers } from '../loadgen.ts'
import type { RelayProcess } from '../relay-process.ts'
import type { CaseName, PerfSettings } from '../options.ts'
import { sleep } from '../../lab/exec.ts'
import { treeCpu, type CpuSeconds } from '../procfs.ts'

/** One measurement: named figures, e.g. { MBps: 1320, relayCpuMsPerGiB: 700 }. */
export type Metrics = Record<string, number>

export interface CaseEnv {
  settings: PerfSettings
  loadgen: LoadGenerator
  servers: Servers
  /** PostgreSQL, when the pgbench case runs. */
  postgres: Endpoint | null
  /** Idle sessions per relay: the setting, capped by the descriptor limit (see idle.ts). */
  idleSessions: number
  /**
   * Idle sessions through an upgrade (upgrade-idle): capped lower, since the new process holds
   * the descriptors of the sessions it has taken plus those of the messages in flight.
   */
  upgradeIdleSessions: number
}

export interface PerfCase {
  name: CaseName
  /** A column heading's worth of description. */
  title: string
  /** The figure shown while the bench runs: metric name and unit. */
  headline: [metric: string, unit: string]
  /** The relays it applies to, by name; every relay when absent. */
  relays?(name: string): boolean
  target(env: CaseEnv): Endpoint
  sessions(env: CaseEnv): number
  /** `relay` is the relay's process, when there is one, for cases that act on it (signals, its log). */
  measure(env: CaseEnv, address: Endpoint, relayPid: number | null, relay: RelayProcess | null): Promise<Metrics>
}

/**
 * Time for a relay's per-session children to exit and be reaped once the client is done: a
 * child caught between the two is in neither its own /proc entry nor its parent's total.
 */
const REAP_MS = 100

/**
 * CPU seconds the relay's processes use while `work` runs, and of them those in user space (the
 * rest is the kernel's work on their behalf: system calls, and on loopback the peer's side of
 * what they send); 0 for the direct connection.
 */
export async function chargedCpu<T>(relayPid: number | null, work: () => Promise<T>): Promise<{ result: T, cpuSeconds: number, userSeconds: number }> {
  const before = relayPid === null ? NO_CPU : treeCpu(relayPid)
  const result = await work()
  if (relayPid !== null) await sleep(REAP_MS)
  const after = relayPid === null ? NO_CPU : treeCpu(relayPid)
  const userSeconds = after.user - before.user
  return { result, cpuSeconds: userSeconds + after.system - before.system, userSeconds }
}

const NO_CPU: CpuSeconds = { user: 0, system: 0 }
