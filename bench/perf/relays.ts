// The relays the performance bench compares, by name: the direct connection, ka-proxy (the
// working tree's, and optionally an older revision's), the peers whose configuration the survival
// lab already writes (HAProxy, nginx stream, socat), and a naive Node pipe() relay as the floor.
// Every relay gets the same keepalive on both legs: ka-proxy's defaults.

import { readFileSync, writeFileSync } from 'node:fs'
import { sleep } from '../lab/exec.ts'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEFAULT_KEEPALIVE } from '../../src/keepalive/settings.ts'
import { haproxy, haproxyConfig } from '../lab/relays/haproxy.ts'
import { kaProxy, kaProxyArgs, kaProxyEntryArgs, kaProxySettingArgs, type KaProxyEntry } from '../lab/relays/ka-proxy.ts'
import { nginx, nginxConfig } from '../lab/relays/nginx.ts'
import { socat, socatArgs } from '../lab/relays/socat.ts'
import type { RelayConfig, RelayOptions } from '../lab/relays/relay.ts'
import { REPO_ROOT } from '../lab/node-script.ts'
import type { RelayCommand } from './relay-process.ts'

export interface PerfRelay {
  name: string
  /** False for the direct connection: the client talks to the server itself. */
  proxies: boolean
  unavailable(): Promise<string | null>
  /** How to start it; `sessions` is the most it must hold at once; `dir` is for its files. */
  command(cfg: RelayConfig, dir: string, sessions: number): RelayCommand
  /** Ready beyond listening (its log, `logPath`, from byte `from` on, says when); listening is enough when absent. */
  ready?(logPath: string, from: number): Promise<void>
  /** Figures from its log of one measurement (how its sessions spread over its event loops). */
  fromLog?(log: string): Record<string, number>
}

export const KEEPALIVE: RelayOptions = { client: { ...DEFAULT_KEEPALIVE }, target: { ...DEFAULT_KEEPALIVE } }

/**
 * Connections above the sessions a relay is configured for. Small: HAProxy refuses to start
 * when twice its maxconn, plus its own few, exceeds the descriptor limit it cannot raise.
 */
const SPARE = 5

const direct: PerfRelay = {
  name: 'direct',
  proxies: false,
  unavailable: async () => null,
  command() { throw new Error('the direct connection has no process') }
}

/**
 * ka-proxy from the checkout at `root` (this one, or a revision extracted by baseline.ts); from
 * src/ through tsx, or (`dist`) the compiled entry point, which starts without compiling.
 */
export function kaProxyRelay(name = 'ka-proxy', root = REPO_ROOT, entry: KaProxyEntry = 'src'): PerfRelay {
  return {
    name,
    proxies: true,
    unavailable: () => kaProxy(entry).unavailable(),
    command: cfg => ({ cmd: process.execPath, args: [...kaProxyEntryArgs(entry, root), ...kaProxyArgs(cfg)], cwd: root })
  }
}

/**
 * ka-proxy with everything an operator turns on besides keepalives (which every relay here has):
 * a TCP heartbeat every second and the admin API, so that their cost shows next to plain ka-proxy.
 */
const kaProxyWithChecks: PerfRelay = {
  ...kaProxyRelay('ka-proxy+checks'),
  command(cfg, dir, sessions) {
    const base = kaProxyRelay().command(cfg, dir, sessions)
    return { ...base, args: [...base.args, '--heartbeat', 'tcp', '--heartbeat-interval', '1', '--admin', '127.0.0.1:0'] }
  }
}

/** How long a relay may take to become ready beyond listening. */
const READY_TIMEOUT_MS = 30_000

/** Resolves once `text` is in the file at `path`, from byte `from` on (earlier runs' lines come before). */
async function lineInLog(path: string, from: number, text: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS
  while (!readFileSync(path).subarray(from).toString().includes(text)) {
    if (Date.now() > deadline) throw new Error(`no "${text}" in ${path} within ${READY_TIMEOUT_MS / 1000} s`)
    await sleep(20)
  }
}

/**
 * How a measurement's sessions spread over ka-proxy's event loops, from their 'session closed'
 * lines (a worker thread's carry `worker`; the main thread's none): the busiest loop's share, %,
 * and how many loops had any.
 */
export function loopSpread(log: string): Record<string, number> {
  const perLoop = new Map<number, number>()
  for (const line of log.split('\n')) {
    if (!line.includes('"session closed"')) continue
    const worker = (JSON.parse(line) as { worker?: number }).worker ?? 0
    perLoop.set(worker, (perLoop.get(worker) ?? 0) + 1)
  }
  const total = [...perLoop.values()].reduce((a, b) => a + b, 0)
  if (total === 0) return {}
  return { busiestLoopPct: (100 * Math.max(...perLoop.values())) / total, loopsUsed: perLoop.size }
}

/** ka-proxy with `--workers n`: ready once its worker threads accept too. */
function kaProxyWorkers(n: number): PerfRelay {
  const base = kaProxyRelay()
  return {
    ...base,
    name: `ka-proxy-w${n}`,
    command(cfg, dir, sessions) {
      const c = base.command(cfg, dir, sessions)
      return { ...c, args: [...c.args, '--workers', String(n)] }
    },
    ready: (logPath, from) => lineInLog(logPath, from, '"workers started"'),
    fromLog: loopSpread
  }
}

/**
 * HAProxy logs one line per session to its standard output (its log file here), as ka-proxy
 * writes its `session closed` line: what a session costs includes its line for both.
 */
const HAPROXY_LOG = { global: ['log stdout format raw local0'], defaults: ['log global', 'option tcplog'] }

/** HAProxy with `nbthread n`, next to ka-proxy-w<n> (unpinned: with the relay pinned to one CPU, threads only share it). */
function haproxyThreads(n: number): PerfRelay {
  return {
    name: `haproxy-t${n}`,
    proxies: true,
    unavailable: () => haproxy.unavailable(),
    command(cfg, dir, sessions) {
      const file = join(dir, 'haproxy.cfg')
      writeFileSync(file, haproxyConfig(cfg, sessions + SPARE, [`nbthread ${n}`, ...HAPROXY_LOG.global], HAPROXY_LOG.defaults))
      return { cmd: 'haproxy', args: ['-db', '-f', file] }
    }
  }
}

const haproxyRelay: PerfRelay = {
  name: 'haproxy',
  proxies: true,
  unavailable: () => haproxy.unavailable(),
  command(cfg, dir, sessions) {
    const file = join(dir, 'haproxy.cfg')
    writeFileSync(file, haproxyConfig(cfg, sessions + SPARE, HAPROXY_LOG.global, HAPROXY_LOG.defaults))
    return { cmd: 'haproxy', args: ['-db', '-f', file] }
  }
}

const nginxRelay: PerfRelay = {
  name: 'nginx',
  proxies: true,
  unavailable: () => nginx.unavailable(),
  command(cfg, dir, sessions) {
    const file = join(dir, 'nginx.conf')
    writeFileSync(file, nginxConfig(cfg, dir, 2 * sessions + SPARE))
    return { cmd: 'nginx', args: ['-p', dir, '-e', 'stderr', '-c', file] }
  }
}

const socatRelay: PerfRelay = {
  name: 'socat',
  proxies: true,
  unavailable: () => socat.unavailable(),
  command: cfg => ({ cmd: 'socat', args: socatArgs(cfg) })
}

const PAIR_RELAY = fileURLToPath(new URL('pair-relay.ts', import.meta.url))

/** Two ka-proxies in a row over loopback (paired mode: near → link → far → target), one process tree. */
const kaProxyPair: PerfRelay = {
  name: 'ka-proxy-pair',
  proxies: true,
  unavailable: () => kaProxy().unavailable(),
  command: ({ listen, target, options }) => ({
    cmd: process.execPath,
    args: ['--import', 'tsx', PAIR_RELAY, `${listen.host}:${listen.port}`, `${target.host}:${target.port}`, ...kaProxySettingArgs(options)],
    cwd: REPO_ROOT
  })
}

const PIPE_RELAY = fileURLToPath(new URL('pipe-relay.ts', import.meta.url))

const nodePipe: PerfRelay = {
  name: 'node-pipe',
  proxies: true,
  unavailable: async () => null,
  command: ({ listen, target }) => ({
    cmd: process.execPath,
    args: ['--import', 'tsx', PIPE_RELAY, listen.host, String(listen.port), target.host, String(target.port)],
    cwd: REPO_ROOT
  })
}

/** Not in the default set: next to `ka-proxy` it shows what starting from TypeScript costs (the upgrade cases). */
const kaProxyDist = kaProxyRelay('ka-proxy-dist', REPO_ROOT, 'dist')

/**
 * Not in the default set: ka-proxy --workers 2 and HAProxy nbthread 2, for the workers comparison
 * (bench/README.md), run unpinned (--no-pin).
 */
const WORKER_RELAYS = [kaProxyWorkers(2), haproxyThreads(2)]

export const PERF_RELAYS: readonly PerfRelay[] = [direct, kaProxyRelay(), kaProxyWithChecks, kaProxyDist, kaProxyPair, haproxyRelay, nginxRelay, socatRelay, nodePipe, ...WORKER_RELAYS]

/** A relay by name; `ka-proxy@<rev>` needs the root of that revision's checkout. */
export function perfRelay(name: string, baselineRoots: ReadonlyMap<string, string>): PerfRelay {
  const root = baselineRoots.get(name)
  if (root !== undefined) return kaProxyRelay(name, root)
  const relay = PERF_RELAYS.find(r => r.name === name)
  if (relay === undefined) throw new RangeError(`--relays: unknown "${name}"; known: ${PERF_RELAYS.map(r => r.name).join(', ')}`)
  return relay
}
