// Freezing a server the way a hung machine does: SIGSTOP to a process and all its
// descendants (a postmaster and its backends). The kernel still completes TCP handshakes
// and ACKs keepalive probes for it; only application-level checks notice.

import { readdirSync, readFileSync } from 'node:fs'

/** `pid` and every descendant, from /proc (parents before children). */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let stat: string
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
    } catch {
      continue
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
    children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)])
  }
  const tree = [pid]
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]!) ?? []))
  return tree
}

function signalAll(pids: number[], signal: NodeJS.Signals): void {
  for (const p of pids) {
    try {
      process.kill(p, signal)
    } catch {
      // exited meanwhile
    }
  }
}

/** Stops the process first, so it forks nothing more, then its descendants. */
export function freeze(pid: number): void {
  signalAll([pid], 'SIGSTOP')
  signalAll(processTree(pid).slice(1), 'SIGSTOP')
}

export function thaw(pid: number): void {
  signalAll(processTree(pid), 'SIGCONT')
}
