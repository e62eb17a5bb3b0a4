// Shared by the relays that are programs of their own: is the binary installed; start it in the
// client namespace and wait until it listens; and the processes of a relay across its own
// upgrades (generations), the newest serving, older ones perhaps still holding sessions.

import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { run } from '../exec.ts'
import type { Lab } from '../lab.ts'
import type { LabProcess } from '../process.ts'
import type { RelayStart, RunningRelay } from './relay.ts'
import { waitForListening } from '../ss.ts'
import { alive, processTree, stopPid } from '../pids.ts'

/** Null when `cmd` runs here, otherwise a note naming the Debian package to install. */
export async function missingCommand(cmd: string, versionArgs: readonly string[], pkg: string): Promise<string | null> {
  const r = await run(cmd, versionArgs, { allowFail: true }).catch(() => null)
  return r === null || r.code !== 0 ? `${cmd} not installed (apt-get install -y ${pkg})` : null
}

/** `cmd`'s absolute path, from PATH: a program that executes itself again (nginx's upgrade) needs it as argv[0]. */
export function commandPath(cmd: string): string {
  const found = (process.env.PATH ?? '').split(':').map(dir => join(dir, cmd)).find(path => existsSync(path))
  return found ?? cmd
}

/** One process of a relay: started by the lab, or by a process of the relay itself (its upgrade). */
export interface Generation {
  pid: number
  running(): boolean
  /** Resolves true when it stopped on SIGTERM (a clean stop). */
  stop(): Promise<boolean>
}

const STOP_GRACE_MS = 5000

export function labGeneration(proc: LabProcess, graceMs = STOP_GRACE_MS): Generation {
  return {
    pid: proc.pid,
    running: () => proc.running,
    async stop() {
      const code = await proc.stop(graceMs)
      return code === 0
    }
  }
}

/** A process the lab did not start: it is killed with the lab at the latest. */
export function strayGeneration(lab: Lab, pid: number, graceMs = STOP_GRACE_MS): Generation {
  lab.track(pid)
  return { pid, running: () => alive(pid), stop: () => stopPid(pid, graceMs) }
}

/** A relay's processes across its upgrades, oldest first; the last one serves. */
export class Generations {
  readonly all: Generation[]

  constructor(first: Generation) {
    this.all = [first]
  }

  get current(): Generation {
    return this.all[this.all.length - 1] as Generation
  }

  add(g: Generation): void {
    this.all.push(g)
  }

  /** Every running process of every generation (one may have started the next: nginx). */
  pids(): number[] {
    return [...new Set(this.all.filter(g => g.running()).flatMap(g => processTree(g.pid)))]
  }

  oldRunning(): boolean {
    return this.all.slice(0, -1).some(g => g.running())
  }

  /** Stops every generation, newest first; true when each stopped cleanly. */
  async stop(): Promise<boolean> {
    let clean = true
    for (const g of [...this.all].reverse()) if (g.running()) clean = (await g.stop()) && clean
    return clean
  }
}

/** How a relay upgrades itself: starts (or has its process start) the next generation, ready to serve. */
export type Upgrade = (ctx: RelayStart, generations: Generations) => Promise<Generation>

export async function startCommandRelay(ctx: RelayStart, name: string, cmd: string, args: readonly string[], upgrade?: Upgrade): Promise<RunningRelay> {
  const proc = ctx.lab.spawn('client', name, cmd, args)
  await proc.readyWhen(waitForListening(ctx.lab.ns('client'), ctx.listen.port, 10_000), 'listening')
  return commandRelay(ctx, labGeneration(proc), upgrade)
}

/** The running relay whose first process is `first` (listening already). */
export function commandRelay(ctx: RelayStart, first: Generation, upgrade?: Upgrade): RunningRelay {
  const generations = new Generations(first)
  return {
    address: ctx.listen,
    async pids() { return generations.pids() },
    ...(upgrade === undefined ? {} : {
      async upgrade() { generations.add(await upgrade(ctx, generations)) },
      oldGenerationRunning: () => generations.oldRunning()
    }),
    async stop() { await generations.stop() }
  }
}
