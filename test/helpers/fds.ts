// Descriptor limits for a running proxy: what it holds now (from /proc), and a limit set
// relative to that with prlimit, so a test is independent of how many descriptors the
// runtime and the test runner's hooks take at start.

import { readdirSync } from 'node:fs'
import { execFileSync } from 'node:child_process'

export function openDescriptors(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

/** Sets RLIMIT_NOFILE of `pid` to what it holds now plus `spare`; returns the limit. */
export function limitDescriptors(pid: number, spare: number): number {
  const limit = openDescriptors(pid) + spare
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit}`])
  return limit
}
