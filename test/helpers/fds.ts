// Descriptors of a running proxy: what it holds now (from /proc), a limit set relative to that
// with prlimit (so a test is independent of how many descriptors the runtime and the test
// runner's hooks take at start), and the sockets on a port that the code under test keeps to itself.

import { readdirSync, readlinkSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import type { NativeAddon } from '../../src/native.ts'

function openDescriptors(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

/** Sets RLIMIT_NOFILE of `pid` to what it holds now plus `spare`; returns the limit. */
export function limitDescriptors(pid: number, spare: number): number {
  const limit = openDescriptors(pid) + spare
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit}`])
  return limit
}

/**
 * Lowers the soft RLIMIT_NOFILE of `pid` to its lowest free descriptor number, so the next
 * descriptor it asks for (an accept) fails with EMFILE; returns a function that raises it to
 * `restore` again (the hard limit stays: raising it back would need CAP_SYS_RESOURCE).
 */
export function exhaustDescriptors(pid: number, restore = 1024): () => void {
  const used = new Set(readdirSync(`/proc/${pid}/fd`).map(Number))
  let lowestFree = 0
  while (used.has(lowestFree)) lowestFree++
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${lowestFree}:`])
  return () => void execFileSync('prlimit', ['--pid', String(pid), `--nofile=${restore}:`])
}

/**
 * This process's connected TCP sockets with `port` at either end, by descriptor: for sockets the
 * code under test keeps to itself (a pair link's), read back through the native helper.
 */
export function connectedOnPort(native: NativeAddon, port: number): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      if (!readlinkSync(`/proc/self/fd/${name}`).startsWith('socket:')) continue
      const [, local, , remote] = native.socketAddresses(Number(name))
      if (local === port || remote === port) out.push(Number(name))
    } catch {
      // Closed meanwhile, or not a connected TCP socket (a listener, a Unix socket).
    }
  }
  return out
}
