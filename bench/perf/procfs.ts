// What a relay's processes cost, read from /proc: CPU time and memory, summed over the process
// and everything it forked (socat forks a child per session).

import { readdirSync, readFileSync } from 'node:fs'
import { processTree, statFields } from '../lab/pids.ts'

/** USER_HZ, the unit of the times in /proc/PID/stat: 100 on every Linux ABI. */
const CLOCK_TICKS = 100

/** CPU seconds, split: in the process's own code (user) and in the kernel on its behalf (system). */
export interface CpuSeconds {
  user: number
  system: number
}

/**
 * CPU seconds used so far by `root` and its descendants: each live process's utime and stime,
 * plus cutime and cstime, the time of children it has already reaped (socat's ended sessions).
 */
export function treeCpu(root: number): CpuSeconds {
  let user = 0
  let system = 0
  for (const pid of processTree(root)) {
    const f = statFields(pid)
    // utime, stime, cutime, cstime are fields 14-17 of stat; f starts at field 3.
    if (f === null) continue
    user += Number(f[11]) + Number(f[13])
    system += Number(f[12]) + Number(f[14])
  }
  return { user: user / CLOCK_TICKS, system: system / CLOCK_TICKS }
}

export interface TreeMemory {
  processes: number
  /** Resident bytes, summed: counts pages shared between forked processes once per process. */
  rss: number
  /** Proportional set size, summed: shared pages split among their sharers, the honest total. */
  pss: number
}

function rollup(pid: number): { rss: number, pss: number } | null {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')
    const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0)
    return { rss: kib('Rss') * 1024, pss: kib('Pss') * 1024 }
  } catch {
    return null
  }
}

export function treeMemory(root: number): TreeMemory {
  const sum: TreeMemory = { processes: 0, rss: 0, pss: 0 }
  for (const pid of processTree(root)) {
    const m = rollup(pid)
    if (m === null) continue
    sum.processes++
    sum.rss += m.rss
    sum.pss += m.pss
  }
  return sum
}

/** Descriptors `root` and its descendants hold open (a process gone meanwhile counts none). */
export function treeDescriptors(root: number): number {
  let n = 0
  for (const pid of processTree(root)) {
    try {
      n += readdirSync(`/proc/${pid}/fd`).length
    } catch {
      // exited between the listing and the read
    }
  }
  return n
}

/** True when something listens on TCP `port` of 127.0.0.1 (or any address), from /proc/net/tcp. */
export function isListening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0')
  const table = readFileSync('/proc/net/tcp', 'utf8')
  return table.split('\n').some(line => {
    const f = line.trim().split(/\s+/)
    return f[3] === '0A' && (f[1] === `0100007F:${hex}` || f[1] === `00000000:${hex}`)
  })
}

function cpuTimes(): Array<{ busy: number, total: number }> {
  return readFileSync('/proc/stat', 'utf8').split('\n').filter(l => /^cpu\d+ /.test(l)).map(line => {
    const t = line.trim().split(/\s+/).slice(1).map(Number)
    const idle = t[3]! + t[4]!  // idle + iowait
    const total = t.reduce((a, b) => a + b, 0)
    return { busy: total - idle, total }
  })
}

/** Per CPU, the fraction of `ms` it spent busy: how quiet the machine is, unlike the load average, now. */
export async function cpuBusy(ms: number): Promise<number[]> {
  const before = cpuTimes()
  await new Promise(resolve => setTimeout(resolve, ms))
  return cpuTimes().map((after, i) => {
    const total = after.total - before[i]!.total
    return total === 0 ? 0 : (after.busy - before[i]!.busy) / total
  })
}
