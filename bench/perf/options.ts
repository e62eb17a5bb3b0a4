// Options of `npm run bench`: flags -> one checked settings object.

import yargs from 'yargs'
import { hideBin } from 'yargs/helpers'

export type CaseName = 'bulk1' | 'bulk8' | 'down1' | 'down8' | 'rr1' | 'rr32' | 'pgbench' | 'idle' | 'upgrade-idle' | 'upgrade-busy'
export const CASES: readonly CaseName[] = ['bulk1', 'bulk8', 'down1', 'down8', 'rr1', 'rr32', 'pgbench', 'idle', 'upgrade-idle', 'upgrade-busy']
export const DEFAULT_RELAYS = ['direct', 'ka-proxy', 'ka-proxy+checks', 'ka-proxy-pair', 'haproxy', 'nginx', 'socat', 'node-pipe']

export interface PerfSettings {
  relays: string[]
  cases: CaseName[]
  /** Times each case is measured per relay; the table shows the median and the range. */
  repeat: number
  /** Bytes sent by the bulk cases, in total (8 streams share it). */
  bulkBytes: number
  streams: number
  rrSize: number
  /** Connections of the many-connection ping-pong case. */
  rrConns: number
  rrSeconds: number
  rrWarmup: number
  pgbenchClients: number
  pgbenchSeconds: number
  /** Idle sessions held open through each relay (capped by the descriptor limit, see idle.ts). */
  idleSessions: number
  /** Sessions being opened at once in the idle case. */
  openWindow: number
  /** Idle case: the open rate from a second round of as many sessions (idle.ts). */
  reopen: boolean
  /** Idle case, with `reopen`: rounds opened and reset in between, not measured (idle.ts). */
  warmRounds: number
  /** Seconds the idle sessions are left alone before the relay's memory is read. */
  idleSettle: number
  /** Busy sessions of the upgrade-busy case (the upgrade-idle case holds `idleSessions`). */
  upgradeBusy: number
  /** Bytes per second each busy session sends (and gets back from the echo). */
  upgradeRate: number
  /** CPUs for the relay and for everything else; null: no pinning. */
  pin: { relay: number, load: number } | null
  /** Git revisions whose ka-proxy runs next to the working tree's, each as `ka-proxy@<rev>`. */
  baselines: string[]
  outDir: string
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1e3, kb: 1e3, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 ** 2, g: 1e9, gb: 1e9, gib: 1024 ** 3 }

/** "2GiB", "256MiB", "1e9" -> bytes. */
export function parseSize(text: string, flag = 'bulk-size'): number {
  const m = /^\s*([\d.e+]+)\s*([a-z]*)\s*$/i.exec(text)
  const unit = SIZE_UNITS[m?.[2]?.toLowerCase() ?? 'x']
  const value = Number(m?.[1])
  if (m === null || unit === undefined || !(value > 0)) throw new RangeError(`--${flag}: not a size: "${text}" (e.g. 2GiB, 256MiB)`)
  return Math.round(value * unit)
}

/** The relay name of a revision's ka-proxy: `ka-proxy@HEAD~1`, `ka-proxy@2512067122` for a hash. */
export function baselineName(rev: string): string {
  return `ka-proxy@${/^[0-9a-f]{11,40}$/i.test(rev) ? rev.slice(0, 10) : rev}`
}

function list(value: string): string[] {
  return value.split(',').map(s => s.trim()).filter(Boolean)
}

function positive(flag: string, value: number): number {
  if (!(value > 0)) throw new RangeError(`--${flag} must be a positive number (got ${value})`)
  return value
}

function count(flag: string, value: number): number {
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`--${flag} must be a whole number, 0 or more (got ${value})`)
  return value
}

export function parseOptions(argv = hideBin(process.argv)): PerfSettings {
  const args = yargs(argv)
    .scriptName('bench')
    .usage('Usage: npm run bench -- [options]\n\n' +
      'Throughput, latency, a real PostgreSQL client, idle-session memory and open rate, and relay CPU per unit ' +
      'of work: a direct connection, ka-proxy and its peers side by side, relays interleaved, each case repeated. ' +
      'The upgrade cases (upgrade-idle, upgrade-busy) run only for ka-proxy relays.')
    .version(false)
    .wrap(Math.min(110, process.stdout.columns || 110))
    .option('relays', { type: 'string', default: DEFAULT_RELAYS.join(','), describe: 'relays to compare, comma-separated' })
    .option('cases', { type: 'string', default: CASES.join(','), describe: 'cases to run, comma-separated' })
    .option('repeat', { alias: 'r', type: 'number', default: 3, describe: 'measurements per case and relay' })
    .option('bulk-size', { type: 'string', default: '2GiB', describe: 'bytes per bulk measurement (8 streams share them)' })
    .option('streams', { type: 'number', default: 8, describe: 'streams of the parallel bulk case' })
    .option('rr-size', { type: 'number', default: 64, describe: 'ping-pong message size, bytes' })
    .option('rr-conns', { type: 'number', default: 32, describe: 'connections of the parallel ping-pong case' })
    .option('rr-seconds', { type: 'number', default: 5, describe: 'ping-pong measurement time' })
    .option('rr-warmup', { type: 'number', default: 0.5, describe: 'ping-pong time before measuring' })
    .option('pgbench-clients', { type: 'number', default: 8, describe: 'pgbench -c' })
    .option('pgbench-seconds', { type: 'number', default: 15, describe: 'pgbench -T' })
    .option('idle-sessions', { type: 'number', default: 10_000, describe: 'idle sessions held through each relay' })
    .option('open-window', { type: 'number', default: 100, describe: 'sessions being opened at once' })
    .option('reopen', { type: 'boolean', default: true, describe: 'idle: reset the sessions and open as many again, for the open rate of a relay that has run (--no-reopen: a new process\'s first sessions)' })
    .option('warm-rounds', { type: 'number', default: 3, describe: 'idle: rounds of as many sessions opened and reset before the measured one, so that a JIT has compiled the open and close path (0: the second round is measured)' })
    .option('idle-settle', { type: 'number', default: 1, describe: 'seconds before reading the memory of idle sessions' })
    .option('upgrade-busy', { type: 'number', default: 100, describe: 'busy sessions through the upgrade (upgrade-busy; upgrade-idle holds --idle-sessions)' })
    .option('upgrade-rate', { type: 'string', default: '1MB', describe: 'bytes per second each busy session sends, and gets back' })
    .option('relay-cpu', { type: 'number', default: 0, describe: 'CPU the relay is pinned to' })
    .option('load-cpu', { type: 'number', default: 1, describe: 'CPU the load generator, servers and PostgreSQL are pinned to' })
    .option('pin', { type: 'boolean', default: true, describe: 'pin with taskset (--no-pin: let the scheduler place everything)' })
    .option('baseline', { type: 'string', array: true, default: [] as string[], describe: 'also run ka-proxy as of this git revision, as "ka-proxy@<rev>" (repeatable)' })
    .option('quick', { type: 'boolean', default: false, describe: 'a smoke run: 256 MiB, 1 s ping-pong, pgbench -T 3, 1,000 idle sessions, once' })
    .option('out', { type: 'string', default: 'bench/results', describe: 'directory for the JSON results' })
    .strict()
    .help()
    .parseSync()

  const given = (flag: string): boolean => argv.some(a => a === `--${flag}` || a.startsWith(`--${flag}=`))
  /** --quick changes the defaults, never a value given on the command line. */
  const quick = <T>(flag: string, value: T, quickValue: T): T => (args.quick && !given(flag) ? quickValue : value)

  const cases = list(args.cases)
  for (const c of cases) {
    if (!CASES.includes(c as CaseName)) throw new RangeError(`--cases: unknown "${c}"; known: ${CASES.join(', ')}`)
  }
  const relays = list(args.relays)
  const baselines = args.baseline.map(String)
  // Right after the working tree's ka-proxy, or in its place when it is left out.
  const at = relays.includes('ka-proxy') ? relays.indexOf('ka-proxy') + 1 : Math.min(1, relays.length)
  relays.splice(at, 0, ...baselines.map(baselineName))
  return {
    relays,
    cases: cases as CaseName[],
    repeat: Math.floor(positive('repeat', quick('repeat', args.repeat, 1))),
    bulkBytes: parseSize(quick('bulk-size', args.bulkSize, '256MiB')),
    streams: Math.floor(positive('streams', args.streams)),
    rrSize: Math.floor(positive('rr-size', args.rrSize)),
    rrConns: Math.floor(positive('rr-conns', args.rrConns)),
    rrSeconds: positive('rr-seconds', quick('rr-seconds', args.rrSeconds, 1)),
    rrWarmup: quick('rr-warmup', args.rrWarmup, 0.2),
    pgbenchClients: Math.floor(positive('pgbench-clients', args.pgbenchClients)),
    pgbenchSeconds: Math.floor(positive('pgbench-seconds', quick('pgbench-seconds', args.pgbenchSeconds, 3))),
    idleSessions: Math.floor(positive('idle-sessions', quick('idle-sessions', args.idleSessions, 1000))),
    openWindow: Math.floor(positive('open-window', args.openWindow)),
    reopen: args.reopen,
    warmRounds: count('warm-rounds', quick('warm-rounds', args.warmRounds, 0)),
    idleSettle: quick('idle-settle', args.idleSettle, 0.5),
    upgradeBusy: Math.floor(positive('upgrade-busy', args.upgradeBusy)),
    upgradeRate: parseSize(args.upgradeRate, 'upgrade-rate'),
    pin: args.pin ? { relay: args.relayCpu, load: args.loadCpu } : null,
    baselines,
    outDir: args.out
  }
}
