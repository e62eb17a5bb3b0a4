// Process trees from /proc: which processes belong to a relay or a server (the process and
// everything it forked: socat forks one child per connection, a postmaster one backend per
// client), what they hold, and stopping them all at once the way a hung machine does.

import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

/**
 * Fields of /proc/<pid>/stat from the third on (state, ppid, …), or null once it has exited.
 * The command name before them may contain spaces and parentheses; fields resume after the last ')'.
 */
export function statFields(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch {
    return null
  }
}

/** `root` and all its descendants that are alive now, parents before children. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const pid = Number(entry)
    const parent = statFields(pid)?.[1]
    if (parent !== undefined) children.set(Number(parent), [...(children.get(Number(parent)) ?? []), pid])
  }
  const tree = [root]
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]!) ?? []))
  return tree
}

/** True while `pid` runs (a zombie, exited but not yet reaped, does not). */
export function alive(pid: number): boolean {
  const state = statFields(pid)?.[0]
  return state !== undefined && state !== 'Z' && state !== 'X'
}

/**
 * Stops a process this one did not start (so it cannot wait for its exit): SIGTERM, SIGKILL
 * after `graceMs`, resolved once it is gone. True when SIGTERM was enough.
 */
export async function stopPid(pid: number, graceMs: number): Promise<boolean> {
  signalAll([pid], 'SIGTERM')
  const deadline = Date.now() + graceMs
  while (alive(pid) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
  if (!alive(pid)) return true
  signalAll([pid], 'SIGKILL')
  while (alive(pid)) await new Promise(resolve => setTimeout(resolve, 20))
  return false
}

/** Sends `signal` to each of `pids` that is still alive. */
export function signalAll(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal)
    } catch {
      // exited meanwhile
    }
  }
}

/**
 * SIGSTOP to `pid` first, so it forks nothing more, then to its descendants. The kernel still
 * completes TCP handshakes and ACKs keepalive probes for them; only application-level checks notice.
 */
export function freeze(pid: number): void {
  signalAll([pid], 'SIGSTOP')
  signalAll(processTree(pid).slice(1), 'SIGSTOP')
}

/** SIGCONT to `pid` and its descendants: undoes `freeze`. */
export function thaw(pid: number): void {
  signalAll(processTree(pid), 'SIGCONT')
}

/** Inodes of the Unix and netlink sockets in `pid`'s network namespace. */
function localSocketInodes(pid: number): Set<string> {
  const inodes = new Set<string>()
  for (const [table, column] of [['unix', 6], ['netlink', 9]] as const) {
    let text: string
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n').slice(1)) {
      const inode = line.trim().split(/\s+/)[column]
      if (inode !== undefined) inodes.add(inode)
    }
  }
  return inodes
}

/**
 * How many network sockets `pids` hold open: their descriptors (/proc/<pid>/fd) that are
 * sockets but not Unix or netlink ones (a runtime's pipes to its helper processes), whatever
 * the TCP state. `ss` lists a socket only while the kernel's TCP tables do, so it misses one
 * that was reset or timed out while its descriptor is still open; this does not.
 */
export function socketDescriptors(pids: readonly number[]): number {
  let n = 0
  for (const pid of pids) {
    let fds: string[]
    try {
      fds = readdirSync(`/proc/${pid}/fd`)
    } catch {
      continue // exited
    }
    const local = localSocketInodes(pid)
    for (const fd of fds) {
      try {
        const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1]
        if (inode !== undefined && !local.has(inode)) n++
      } catch {
        // closed meanwhile
      }
    }
  }
  return n
}
