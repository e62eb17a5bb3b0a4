// The lab: three network namespaces joined by veth pairs, like an app host behind a
// carrier-grade NAT talking to a server.
//
//   client (app + relay)  c0 ── rc  router (masquerade, short conntrack timeout)  rs ── s0  server
//   10.77.1.2                  10.77.1.1                                   10.77.2.1        10.77.2.2
//
// The router forgets an idle established flow after `natTimeout` seconds. With
// nf_conntrack_tcp_loose = 0 the next packet of that flow is not picked up again but is
// INVALID, and `ct state invalid drop` discards it, in both directions: the flow becomes a
// silent blackhole, with no RST to tell either end. The server has no route to the client
// subnet, so nothing gets through except via the NAT.

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { run, runIn, type RunOptions, type RunResult } from './exec.ts'
import { labNames, removeNetnsSync, sweepStaleNamespaces, type LabNames } from './names.ts'
import { onTeardown } from './cleanup.ts'
import { spawnIn, type LabProcess, type SpawnOptions } from './process.ts'
import { Faults } from './faults.ts'
import { alive, signalAll } from './pids.ts'

export type Role = 'client' | 'router' | 'server'

export const ADDRESSES = {
  client: '10.77.1.2',
  routerClientSide: '10.77.1.1',
  routerServerSide: '10.77.2.1',
  server: '10.77.2.2'
} as const

export interface LabOptions {
  /** Seconds an idle established TCP flow survives in the NAT (nf_conntrack_tcp_timeout_established). */
  natTimeout: number
}

/** The router's filter and NAT tables. `faults` is where blackholes are added and flushed. */
function routerRuleset(): string {
  return `
table inet kalab {
  chain faults {
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state invalid counter drop
    jump faults
  }
  chain input {
    type filter hook input priority 0; policy accept;
    ct state invalid counter drop
  }
}
table ip kalab_nat {
  chain postrouting {
    type nat hook postrouting priority 100;
    oifname "rs" masquerade
  }
}
`
}

export class Lab {
  readonly names: LabNames
  readonly natTimeout: number
  readonly addresses = ADDRESSES
  readonly faults: Faults
  private readonly processes = new Set<LabProcess>()
  /** Processes the lab did not start but must not outlive it: a relay's own new generation after an upgrade. */
  private readonly strays = new Set<number>()
  private readonly tempDirs: string[] = []
  private readonly unregister: () => void
  private destroyed = false

  constructor(names: LabNames, opts: LabOptions) {
    this.names = names
    this.natTimeout = opts.natTimeout
    this.faults = new Faults(this)
    // Registered before anything is created, so a failure half-way is cleaned up too.
    this.unregister = onTeardown(() => this.destroySync())
  }

  ns(role: Role): string {
    return this.names[role]
  }

  exec(role: Role, cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
    return runIn(this.ns(role), cmd, args, opts)
  }

  spawn(role: Role, name: string, cmd: string, args: readonly string[], opts?: SpawnOptions): LabProcess {
    const proc = spawnIn(this.ns(role), name, cmd, args, opts)
    this.processes.add(proc)
    proc.once('exit', () => this.processes.delete(proc))
    return proc
  }

  /** Kills `pid` with the lab if it is still running then (it was started by a lab process, not by the lab). */
  track(pid: number): void {
    this.strays.add(pid)
  }

  /** A temporary directory removed with the lab. */
  tempDir(prefix: string): string {
    const dir = mkdtempSync(join(tmpdir(), `${this.names.id}-${prefix}-`))
    this.tempDirs.push(dir)
    return dir
  }

  /** Packets the NAT has dropped as INVALID (flows it had forgotten), both directions. */
  async natDrops(): Promise<number> {
    const { stdout } = await this.exec('router', 'nft', ['list', 'table', 'inet', 'kalab'])
    return [...stdout.matchAll(/ct state invalid counter packets (\d+)/g)]
      .reduce((sum, m) => sum + Number(m[1]), 0)
  }

  async build(): Promise<void> {
    const { client, router, server } = this.names
    for (const ns of [client, router, server]) await run('ip', ['netns', 'add', ns])
    // Creating each veth pair directly inside its namespaces keeps the host's interface
    // names untouched, so parallel labs can all use c0/rc/rs/s0.
    await run('ip', ['-n', client, 'link', 'add', 'c0', 'type', 'veth', 'peer', 'name', 'rc', 'netns', router])
    await run('ip', ['-n', server, 'link', 'add', 's0', 'type', 'veth', 'peer', 'name', 'rs', 'netns', router])
    const A = ADDRESSES
    await run('ip', ['-n', client, 'addr', 'add', `${A.client}/24`, 'dev', 'c0'])
    await run('ip', ['-n', router, 'addr', 'add', `${A.routerClientSide}/24`, 'dev', 'rc'])
    await run('ip', ['-n', router, 'addr', 'add', `${A.routerServerSide}/24`, 'dev', 'rs'])
    await run('ip', ['-n', server, 'addr', 'add', `${A.server}/24`, 'dev', 's0'])
    for (const [ns, dev] of [[client, 'lo'], [client, 'c0'], [router, 'lo'], [router, 'rc'], [router, 'rs'], [server, 'lo'], [server, 's0']] as const) {
      await run('ip', ['-n', ns, 'link', 'set', dev, 'up'])
    }
    await run('ip', ['-n', client, 'route', 'add', 'default', 'via', A.routerClientSide])
    await this.exec('router', 'sysctl', ['-qw', 'net.ipv4.ip_forward=1'])
    // The ruleset first: it makes conntrack active in the router, which creates the sysctls.
    await this.exec('router', 'nft', ['-f', '-'], { input: routerRuleset() })
    await this.exec('router', 'sysctl', ['-qw',
      `net.netfilter.nf_conntrack_tcp_timeout_established=${this.natTimeout}`,
      'net.netfilter.nf_conntrack_tcp_loose=0'])
  }

  /** Stops every process, then removes the namespaces and temporary directories. Idempotent. */
  async destroy(): Promise<void> {
    if (this.destroyed) return
    await Promise.all([...this.processes].map(p => p.stop(2000)))
    this.destroySync()
  }

  private destroySync(): void {
    if (this.destroyed) return
    this.destroyed = true
    this.unregister()
    signalAll([...this.strays].filter(alive), 'SIGKILL')
    for (const ns of [this.names.client, this.names.router, this.names.server]) removeNetnsSync(ns)
    for (const dir of this.tempDirs) rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * Builds a lab. On any failure the partial lab is removed before the error propagates.
 * Call `labUnsupported()` first to skip cleanly where the lab cannot run.
 */
export async function createLab(opts: LabOptions): Promise<Lab> {
  sweepStaleNamespaces()
  const lab = new Lab(labNames(), opts)
  try {
    await lab.build()
  } catch (err) {
    await lab.destroy()
    throw err
  }
  return lab
}
