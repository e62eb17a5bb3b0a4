// Options of `npm run bench:survival`: flags -> one checked settings object.

import yargs from 'yargs'
import { hideBin } from 'yargs/helpers'
import type { KeepaliveSettings } from '../lab/index.ts'

export type ScenarioName = 'survival' | 'blackhole' | 'inflight' | 'vanish' | 'upgrade' | 'box' | 'flush'
export const SCENARIOS: readonly ScenarioName[] = ['survival', 'blackhole', 'inflight', 'vanish', 'upgrade', 'box', 'flush']
export const DEFAULT_RELAYS = ['direct', 'ka-proxy', 'ka-proxy-pair', 'haproxy', 'socat', 'nginx']

export interface BenchSettings {
  /** Seconds the NAT keeps an idle flow. */
  natTimeout: number
  sessions: number
  /** Longest idle time of the survival sessions: each has its own, spread over (0, idleMax]. */
  idleMax: number
  /** Target-leg keepalive for every relay that has settings. */
  keepalive: KeepaliveSettings
  /** Client-leg keepalive. */
  clientKeepalive: KeepaliveSettings
  /** ka-proxy's TCP_USER_TIMEOUT; undefined: its default (idle + interval × count). */
  userTimeout: number | undefined
  /** TCP_USER_TIMEOUT for HAProxy and socat; undefined: none, as they ship. */
  peerUserTimeout: number | undefined
  relays: string[]
  scenarios: ScenarioName[]
  /** Seconds to wait for a relay to notice a fault. */
  window: number
  /** Seconds after each relay's own upgrade until its sessions are checked. */
  upgradeWait: number
  /** HAProxy's hard-stop-after for its reload, seconds: how long its old process keeps sessions. */
  hardStopAfter: number
  /** The data-only box's timeout (HAProxy timeout client/server), seconds. */
  boxTimeout: number
  /** How long the sessions through the box stay idle before they are checked, seconds. */
  boxIdle: number
  /** Seconds the sessions stay idle before the NAT is flushed. */
  flushAfter: number
  /** ka-proxy-pair's --pair-heartbeat, seconds. */
  pairHeartbeat: number
  /** ka-proxy-pair's --resume-window, seconds; undefined: its default. */
  resumeWindow: number | undefined
  outDir: string
}

function list(value: string): string[] {
  return value.split(',').map(s => s.trim()).filter(Boolean)
}

export function parseOptions(argv = hideBin(process.argv)): BenchSettings {
  const args = yargs(argv)
    .scriptName('bench:survival')
    .usage('Usage: npm run bench:survival -- [options]   (as root)\n\n' +
      'Measures how relays keep idle TCP sessions alive through an aggressive NAT, how fast ' +
      'they notice dead peers, and whether their sessions survive their own upgrade, in network namespaces on this machine.')
    .version(false)
    .wrap(Math.min(110, process.stdout.columns || 110))
    .option('nat-timeout', { alias: 'T', type: 'number', default: 15, describe: 'seconds the NAT keeps an idle flow' })
    .option('sessions', { alias: 'n', type: 'number', default: 50, describe: 'sessions per relay and scenario' })
    .option('idle-max', { alias: 'idle-time', type: 'number', describe: 'longest idle of the survival sessions, seconds; session i of n idles i/n of it [default: 3 × nat-timeout]' })
    .option('idle', { type: 'number', default: 5, describe: 'keepalive idle (TCP_KEEPIDLE), seconds' })
    .option('interval', { type: 'number', default: 2, describe: 'keepalive interval (TCP_KEEPINTVL), seconds' })
    .option('count', { type: 'number', default: 3, describe: 'keepalive probes (TCP_KEEPCNT)' })
    .option('client-idle', { type: 'number', describe: 'client-leg keepalive idle [default: --idle]' })
    .option('client-interval', { type: 'number', describe: 'client-leg keepalive interval [default: --interval]' })
    .option('client-count', { type: 'number', describe: 'client-leg keepalive probes [default: --count]' })
    .option('user-timeout', { type: 'number', describe: "ka-proxy's TCP_USER_TIMEOUT, seconds; 0 disables [default: its own, idle + interval × count]" })
    .option('peer-user-timeout', { type: 'number', describe: 'TCP_USER_TIMEOUT for haproxy (tcp-ut) and socat, seconds [default: none]' })
    .option('relays', { type: 'string', default: DEFAULT_RELAYS.join(','), describe: 'relays to compare, comma-separated' })
    .option('scenarios', { type: 'string', default: SCENARIOS.join(','), describe: 'scenarios to run, comma-separated' })
    .option('window', { type: 'number', default: 45, describe: 'seconds to wait for a relay to notice a fault' })
    .option('upgrade-wait', { type: 'number', default: 30, describe: "seconds after each relay's own upgrade until its sessions are checked" })
    .option('hard-stop-after', { type: 'number', default: 10, describe: "HAProxy's hard-stop-after on its reload, seconds (how long its old process keeps sessions)" })
    .option('box-timeout', { type: 'number', default: 6, describe: 'box: seconds the box on the path (HAProxy timeout client/server) lets a session go without data' })
    .option('box-idle', { type: 'number', default: 30, describe: 'box: seconds the sessions through it stay idle before they are checked' })
    .option('flush-after', { type: 'number', default: 2, describe: 'flush: seconds the sessions stay idle before conntrack -F in the NAT' })
    .option('pair-heartbeat', { type: 'number', default: 2, describe: "ka-proxy-pair's --pair-heartbeat, seconds (below --box-timeout, or the box times its link out)" })
    .option('resume-window', { type: 'number', describe: "ka-proxy-pair's --resume-window, seconds [default: its own]" })
    .option('out', { type: 'string', default: 'bench/results', describe: 'directory for the JSON and SVG results' })
    .strict()
    .help()
    .parseSync()

  const keepalive = { idle: args.idle, interval: args.interval, count: args.count }
  // A flow idle for T seconds is forgotten by the NAT; keepalive probes it after idle, then every
  // interval. At T or more every session dies whatever the relay does: a 0 % that means nothing.
  const probed = { idle: args.idle, interval: args.interval, 'client-idle': args.clientIdle, 'client-interval': args.clientInterval }
  for (const [flag, value] of Object.entries(probed)) {
    if (value !== undefined && value >= args.natTimeout) {
      throw new RangeError(`--${flag} (${value} s) must be below --nat-timeout (${args.natTimeout} s): the NAT would forget every flow before its next keepalive probe`)
    }
  }
  const scenarios = list(args.scenarios)
  for (const s of scenarios) {
    if (!SCENARIOS.includes(s as ScenarioName)) throw new RangeError(`--scenarios: unknown "${s}"; known: ${SCENARIOS.join(', ')}`)
  }
  for (const [flag, value] of Object.entries({ 'nat-timeout': args.natTimeout, sessions: args.sessions, idle: args.idle, interval: args.interval, count: args.count, window: args.window, 'upgrade-wait': args.upgradeWait, 'hard-stop-after': args.hardStopAfter, 'box-timeout': args.boxTimeout, 'box-idle': args.boxIdle, 'flush-after': args.flushAfter, 'pair-heartbeat': args.pairHeartbeat })) {
    if (!(value > 0)) throw new RangeError(`--${flag} must be a positive number (got ${value})`)
  }
  if (args.idleMax !== undefined && !(args.idleMax > 0)) throw new RangeError(`--idle-max must be a positive number (got ${args.idleMax})`)
  if (args.resumeWindow !== undefined && !(args.resumeWindow > 0)) throw new RangeError(`--resume-window must be a positive number (got ${args.resumeWindow})`)
  return {
    natTimeout: args.natTimeout,
    sessions: Math.floor(args.sessions),
    idleMax: args.idleMax ?? 3 * args.natTimeout,
    keepalive,
    clientKeepalive: {
      idle: args.clientIdle ?? keepalive.idle,
      interval: args.clientInterval ?? keepalive.interval,
      count: args.clientCount ?? keepalive.count
    },
    userTimeout: args.userTimeout,
    peerUserTimeout: args.peerUserTimeout,
    relays: list(args.relays),
    scenarios: scenarios as ScenarioName[],
    window: args.window,
    upgradeWait: args.upgradeWait,
    hardStopAfter: args.hardStopAfter,
    boxTimeout: args.boxTimeout,
    boxIdle: args.boxIdle,
    flushAfter: args.flushAfter,
    pairHeartbeat: args.pairHeartbeat,
    resumeWindow: args.resumeWindow,
    outDir: args.out
  }
}
