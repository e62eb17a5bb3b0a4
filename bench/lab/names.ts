// Namespace names: unique per process and per lab, so parallel test files never collide, and
// carrying the owner's pid, so a lab left behind by a killed run (SIGKILL skips every handler)
// can be recognised and removed by the next run.

import { runSync } from './exec.ts'

export const NETNS_PREFIX = 'kalab'

export interface LabNames {
  id: string
  client: string
  router: string
  server: string
}

let sequence = 0

export function labNames(): LabNames {
  sequence += 1
  const id = `${NETNS_PREFIX}-${process.pid}-${sequence}`
  return { id, client: `${id}-client`, router: `${id}-router`, server: `${id}-server` }
}

function ownerPid(ns: string): number | null {
  const m = new RegExp(`^${NETNS_PREFIX}-(\\d+)-\\d+-`).exec(ns)
  return m === null ? null : Number(m[1])
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Kills every process inside `ns` (by pid) and deletes it. Synchronous; never throws. */
export function removeNetnsSync(ns: string): void {
  const pids = runSync('ip', ['netns', 'pids', ns]).stdout.split(/\s+/).filter(Boolean).map(Number)
  for (const pid of pids) {
    try { process.kill(pid, 'SIGKILL') } catch { /* gone already */ }
  }
  runSync('ip', ['netns', 'del', ns])
}

/** Removes lab namespaces whose owning process no longer exists. Returns their names. */
export function sweepStaleNamespaces(): string[] {
  const listed = runSync('ip', ['netns', 'list']).stdout
  const stale = listed.split('\n')
    .map(line => line.split(' ')[0] ?? '')
    .filter(ns => {
      const pid = ownerPid(ns)
      return pid !== null && pid !== process.pid && !alive(pid)
    })
  for (const ns of stale) removeNetnsSync(ns)
  return stale
}
