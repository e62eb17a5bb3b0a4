// The relays the performance bench compares, by name: the direct connection, ka-proxy (the
// working tree's, and optionally an older revision's), the peers whose configuration the survival
// lab already writes (HAProxy, nginx stream, socat), and a naive Node pipe() relay as the floor.
// Every relay gets the same keepalive on both legs: ka-proxy's defaults.

import { writeFileSync } from 'node:fs'
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

const haproxyRelay: PerfRelay = {
  name: 'haproxy',
  proxies: true,
  unavailable: () => haproxy.unavailable(),
  command(cfg, dir, sessions) {
    const file = join(dir, 'haproxy.cfg')
    writeFileSync(file, haproxyConfig(cfg, sessions + SPARE))
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

export const PERF_RELAYS: readonly PerfRelay[] = [direct, kaProxyRelay(), kaProxyWithChecks, kaProxyDist, kaProxyPair, haproxyRelay, nginxRelay, socatRelay, nodePipe]

/** A relay by name; `ka-proxy@<rev>` needs the root of that revision's checkout. */
export function perfRelay(name: string, baselineRoots: ReadonlyMap<string, string>): PerfRelay {
  const root = baselineRoots.get(name)
  if (root !== undefined) return kaProxyRelay(name, root)
  const relay = PERF_RELAYS.find(r => r.name === name)
  if (relay === undefined) throw new RangeError(`--relays: unknown "${name}"; known: ${PERF_RELAYS.map(r => r.name).join(', ')}`)
  return relay
}
