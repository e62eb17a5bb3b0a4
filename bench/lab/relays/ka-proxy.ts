// ka-proxy itself, run from this checkout in the client namespace (the app's sidecar). By
// default from the TypeScript sources through tsx, so the lab tests what is in src/ without a
// build; KA_PROXY_ENTRY=dist runs the compiled entry point in dist/ instead. Its own upgrade is
// SIGUSR2 (src/upgrade.ts): it starts the new process itself, which writes to the same stdout.

import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { targetAcross, type KeepaliveSettings, type Relay, type RelayConfig, type RelayOptions } from './relay.ts'
import type { Lab, Role } from '../lab.ts'
import { REPO_ROOT } from '../node-script.ts'
import { processTree, socketDescriptors } from '../pids.ts'
import { Generations, labGeneration, strayGeneration } from './command.ts'
import type { LabProcess } from '../process.ts'
import { sleep } from '../exec.ts'

/** Time for the new process to say it serves, from SIGUSR2. */
const UPGRADE_BOUND_MS = 30_000
/** Time for the old process to exit once the new one serves. */
const OLD_EXIT_BOUND_MS = 10_000

export type KaProxyEntry = 'src' | 'dist'

/** The command's entry point: main.* runs the CLI (cli.* only exports it, in some versions). */
function entryPath(entry: KaProxyEntry, root = REPO_ROOT): string {
  const candidates = entry === 'dist' ? ['dist/main.js', 'dist/cli.js'] : ['src/main.ts', 'src/cli.ts']
  const paths = candidates.map(c => join(root, c))
  return paths.find(p => existsSync(p)) ?? paths[0] as string
}

/** Node's arguments that run the ka-proxy command of the checkout at `root`. */
export function kaProxyEntryArgs(entry: KaProxyEntry, root = REPO_ROOT): string[] {
  const path = entryPath(entry, root)
  return entry === 'dist' ? [path] : ['--import', 'tsx', path]
}

function keepaliveArgs(prefix: string, k: KeepaliveSettings): string[] {
  return [`--${prefix}idle`, String(k.idle), `--${prefix}interval`, String(k.interval), `--${prefix}count`, String(k.count)]
}

export function kaProxyArgs({ listen, target, options }: RelayConfig): string[] {
  return [
    '--listen', `${listen.host}:${listen.port}`,
    '--target', `${target.host}:${target.port}`,
    ...kaProxySettingArgs(options)
  ]
}

/** The arguments of `options` (keepalive of both legs, user timeout, paired mode) and JSON logs. */
export function kaProxySettingArgs(options: RelayOptions): string[] {
  return [
    ...keepaliveArgs('', options.target),
    ...keepaliveArgs('client-', options.client),
    ...(options.userTimeout === undefined ? [] : ['--user-timeout', String(options.userTimeout)]),
    ...(options.pairHeartbeat === undefined ? [] : ['--pair-heartbeat', String(options.pairHeartbeat)]),
    ...(options.resumeWindow === undefined ? [] : ['--resume-window', String(options.resumeWindow)]),
    '--log-format', 'json'
  ]
}

/** The path of ka-proxy's entry point, or why it cannot run. */
export function kaProxyUnavailable(entry: KaProxyEntry): string | null {
  const path = entryPath(entry)
  return existsSync(path) ? null : `ka-proxy not found at ${path}${entry === 'dist' ? ' (npm run build)' : ''}`
}

/** Starts ka-proxy with `args` in the namespace of `role`; resolves once it logged "listening". */
export async function startKaProxy(lab: Lab, role: Role, args: readonly string[], entry: KaProxyEntry): Promise<LabProcess> {
  const proc = lab.spawn(role, 'ka-proxy', process.execPath, [...kaProxyEntryArgs(entry), ...args], { cwd: REPO_ROOT })
  await proc.waitForLine(line => parseJson(line)?.msg === 'listening', 20_000, 'its "listening" log line')
  return proc
}

/** Its "session closed" log lines. */
export function sessionLines(proc: LabProcess): Array<Record<string, unknown>> {
  return proc.lines.map(parseJson).filter((e): e is Record<string, unknown> => e?.msg === 'session closed')
}

/** One of ka-proxy's JSON log lines as an object; null for anything else. */
export function parseJson(line: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(line)
    return typeof value === 'object' && value !== null ? value as Record<string, unknown> : null
  } catch {
    return null
  }
}

/** The entry point the lab runs unless told: the sources, or dist/ with KA_PROXY_ENTRY=dist. */
export const DEFAULT_ENTRY: KaProxyEntry = process.env.KA_PROXY_ENTRY === 'dist' ? 'dist' : 'src'

/**
 * One ka-proxy process and those its upgrades started (they write to its stdout); the last one
 * serves. `upgrade` is SIGUSR2 to the serving one, done once the old one has gone.
 */
export class KaProxyGenerations {
  readonly #lab: Lab
  readonly #proc: LabProcess
  readonly #generations: Generations
  readonly #stopGraceMs: number | undefined

  /** `stopGraceMs`: how long each process has to exit 0 after SIGTERM before it is killed. */
  constructor(lab: Lab, proc: LabProcess, stopGraceMs?: number) {
    this.#lab = lab
    this.#proc = proc
    this.#stopGraceMs = stopGraceMs
    this.#generations = new Generations(labGeneration(proc, stopGraceMs))
  }

  pids(): number[] {
    return this.#generations.pids()
  }

  async upgrade(): Promise<void> {
    const old = this.#generations.current
    this.#generations.add(strayGeneration(this.#lab, await upgrade(this.#proc), this.#stopGraceMs))
    // Done when the old process has gone: at once once every session moved (still running
    // after the bound: it kept sessions, which oldRunning then says).
    const deadline = Date.now() + OLD_EXIT_BOUND_MS
    while (old.running() && Date.now() < deadline) await sleep(50)
  }

  oldRunning(): boolean {
    return this.#generations.oldRunning()
  }

  /** SIGTERM to every generation; true when each stopped cleanly (exit 0). */
  stop(): Promise<boolean> {
    return this.#generations.stop()
  }
}

export function kaProxy(entry = DEFAULT_ENTRY): Relay {
  return {
    name: 'ka-proxy',
    proxies: true,
    unavailable: async () => kaProxyUnavailable(entry),
    async start(start) {
      const ctx = await targetAcross(start)
      const proc = await startKaProxy(ctx.lab, 'client', kaProxyArgs(ctx), entry)
      const generations = new KaProxyGenerations(ctx.lab, proc)
      const baseline = socketDescriptors(processTree(proc.pid))
      return {
        address: ctx.listen,
        async pids() { return generations.pids() },
        async descriptorsLeft() { return socketDescriptors(generations.pids()) - baseline },
        sessionLog: () => sessionLines(proc),
        upgrade: () => generations.upgrade(),
        oldGenerationRunning: () => generations.oldRunning(),
        async stop() {
          // SIGTERM is a graceful stop that exits 0; anything else is a failure of the run.
          if (!(await generations.stop())) throw new Error(`ka-proxy did not stop cleanly on SIGTERM: ${proc.stderr.trim().slice(-500)}`)
        }
      }
    },
    upgradeHow: () => 'SIGUSR2: listeners and sessions handed over'
  }
}

/** SIGUSR2 to the serving process; resolves with the new one's pid once it serves. */
async function upgrade(proc: LabProcess): Promise<number> {
  // Every generation writes to the same stdout: the serving one is the last upgrade's new process.
  const done = proc.lines.map(parseJson).filter(l => String(l?.msg).startsWith('upgrade done'))
  const serving = done.length === 0 ? proc.pid : Number(done[done.length - 1]?.newPid)
  process.kill(serving, 'SIGUSR2')
  const outcomeOf = (l: string): boolean => {
    const line = parseJson(l)
    return line?.pid === serving && /^upgrade (done|failed)/.test(String(line.msg))
  }
  const line = await proc.waitForLine(outcomeOf, UPGRADE_BOUND_MS, 'an "upgrade done" line')
  const outcome = parseJson(line)
  if (outcome === null || !String(outcome.msg).startsWith('upgrade done')) throw new Error(`ka-proxy: ${String(outcome?.msg)}`)
  return Number(outcome.newPid)
}
