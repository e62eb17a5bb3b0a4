// Shared by the relays that are third-party programs: is the binary installed, and start it in
// the client namespace and wait until it listens.

import { run } from '../exec.ts'
import type { RelayStart, RunningRelay } from './relay.ts'
import { waitForListening } from '../ss.ts'
import { processTree } from '../pids.ts'

/** Null when `cmd` runs here, otherwise a note naming the Debian package to install. */
export async function missingCommand(cmd: string, versionArgs: readonly string[], pkg: string): Promise<string | null> {
  const r = await run(cmd, versionArgs, { allowFail: true }).catch(() => null)
  return r === null || r.code !== 0 ? `${cmd} not installed (apt-get install -y ${pkg})` : null
}

export async function startCommandRelay(ctx: RelayStart, name: string, cmd: string, args: readonly string[]): Promise<RunningRelay> {
  const proc = ctx.lab.spawn('client', name, cmd, args)
  await proc.readyWhen(waitForListening(ctx.lab.ns('client'), ctx.listen.port, 10_000), 'listening')
  return {
    address: ctx.listen,
    async pids() { return proc.running ? processTree(proc.pid) : [] },
    async stop() { await proc.stop() }
  }
}
