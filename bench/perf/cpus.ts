// CPU pinning on a small machine: the relay gets one core to itself, the load generator, the
// servers and PostgreSQL share the other. The bench process pins itself to the load core first,
// so everything it starts inherits that core; relays are started through `taskset` onto theirs.

import { availableParallelism } from 'node:os'
import { run } from '../lab/exec.ts'

export interface Pinning {
  relay: number
  load: number
}

/** Null when `pin` can be applied here, otherwise why not. */
export async function pinningUnavailable(pin: Pinning): Promise<string | null> {
  const cpus = availableParallelism()
  if (pin.relay === pin.load) return `--relay-cpu and --load-cpu are the same CPU (${pin.relay})`
  if (Math.max(pin.relay, pin.load) >= cpus) return `this machine has ${cpus} CPU(s); cannot pin to CPUs ${pin.relay} and ${pin.load}`
  const taskset = await run('taskset', ['-V'], { allowFail: true }).catch(() => null)
  return taskset === null || taskset.code !== 0 ? 'taskset not installed (apt-get install -y util-linux)' : null
}

/** Every thread of this process, and so everything it starts from now on, onto `cpu`. */
export async function pinSelf(cpu: number): Promise<void> {
  await run('taskset', ['-a', '-p', '-c', String(cpu), String(process.pid)])
}

/**
 * The command line that runs `cmd args` on `cpu` (or anywhere, for null), with the descriptor
 * limit raised to the hard limit first: a relay holding thousands of sessions needs two each.
 */
export function pinnedCommand(cpu: number | null, cmd: string, args: readonly string[]): [string, string[]] {
  const pin = cpu === null ? [] : ['taskset', '-c', String(cpu)]
  return ['sh', ['-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', ...pin, cmd, ...args]]
}

export function describePinning(pin: Pinning | null): string {
  if (pin === null) return 'not pinned: relay, load generator and servers share all CPUs'
  return `relay pinned to CPU ${pin.relay}; load generator, servers and PostgreSQL pinned to CPU ${pin.load} (taskset)`
}
