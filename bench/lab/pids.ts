// Which processes belong to a relay: the process and everything it forked (socat forks one
// child per connection, and the child holds that connection's sockets).

import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

function parentOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(fields[1])
  } catch {
    return null
  }
}

/** `root` and all its descendants that are alive now. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const pid = Number(entry)
    const parent = parentOf(pid)
    if (parent !== null) children.set(parent, [...(children.get(parent) ?? []), pid])
  }
  const tree: number[] = []
  const queue = [root]
  while (queue.length > 0) {
    const pid = queue.shift() as number
    tree.push(pid)
    queue.push(...(children.get(pid) ?? []))
  }
  return tree
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
