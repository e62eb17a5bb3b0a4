// Command line: flags -> checked options -> a running proxy. main() maps run()'s outcome
// to an exit code: 0 after a clean stop, 2 for bad input, 3 for a listen address in use.

import yargs, { type Argv } from 'yargs'
import { hideBin } from 'yargs/helpers'
import type { Logger } from 'pino'
import { DEFAULTS, resolveOptions, type RawOptions } from './config/options.ts'
import { describeHeartbeat, HEARTBEAT_DEFAULTS as HB } from './config/heartbeat.ts'
import { ConfigError, EXIT_FAILURE, KaError } from './errors.ts'
import { KeepaliveApplier } from './keepalive/socket-options.ts'
import { DEFAULT_KEEPALIVE, describeKeepalive } from './keepalive/settings.ts'
import { ProxyListener } from './listener.ts'
import { createLogger, LOG_LEVELS, type LogFormat, type LogLevel } from './log.ts'
import { nativeStatusLine, runDoctor } from './doctor.ts'
import { formatEndpoint } from './config/endpoint.ts'
import { VERSION } from './version.ts'

const KEEPALIVE_GROUP = 'Keepalive (both legs; seconds):'
const LEG_GROUP = 'Per-leg overrides:'
const TIMEOUT_GROUP = 'Timeouts (seconds):'
const HEARTBEAT_GROUP = 'Heartbeats and failover (seconds):'

function buildParser(argv: string[]): Argv {
  const d = DEFAULT_KEEPALIVE
  let parser = yargs(argv)
    .scriptName('ka-proxy')
    .version(false)
    .usage('Usage: ka-proxy --listen [host:]port --target host:port [options]\n       ka-proxy doctor')
    .command('doctor', 'check that keepalive options can be set and read back on this machine')
    .option('listen', { type: 'string', requiresArg: true, describe: '[host:]port to accept clients on (bare port: all interfaces)' })
    .option('target', { type: 'string', requiresArg: true, describe: 'host:port[,host:port...] to relay to, first healthy wins; names are resolved for every connection' })
    .option('idle', { type: 'number', requiresArg: true, group: KEEPALIVE_GROUP, describe: `TCP_KEEPIDLE: idle time before the first probe, 1..32767 [default: ${d.idle}]` })
    .option('interval', { type: 'number', requiresArg: true, group: KEEPALIVE_GROUP, describe: `TCP_KEEPINTVL: time between probes, 1..32767 [default: ${d.interval}]` })
    .option('count', { type: 'number', requiresArg: true, group: KEEPALIVE_GROUP, describe: `TCP_KEEPCNT: unanswered probes before the peer is dead, 1..127 [default: ${d.count}]` })
    .option('user-timeout', { type: 'number', requiresArg: true, group: KEEPALIVE_GROUP, describe: 'TCP_USER_TIMEOUT: max time sent data may stay unacknowledged; 0 disables [default: idle + interval × count]' })
  for (const leg of ['client', 'target'] as const) {
    for (const field of ['idle', 'interval', 'count', 'user-timeout']) {
      parser = parser.option(`${leg}-${field}`, { type: 'number', requiresArg: true, group: LEG_GROUP, describe: `--${field} for the ${leg} leg only` })
    }
  }
  return parser
    .option('connect-timeout', { type: 'number', requiresArg: true, group: TIMEOUT_GROUP, describe: `give up connecting to the target after this [default: ${DEFAULTS.connectTimeout}]` })
    .option('half-close-timeout', { type: 'number', requiresArg: true, group: TIMEOUT_GROUP, describe: `close a session this long after only one side ended it [default: ${DEFAULTS.halfCloseTimeout}]` })
    .option('flush-timeout', { type: 'number', requiresArg: true, group: TIMEOUT_GROUP, describe: `time a surviving peer gets to take queued data before it is reset [default: ${DEFAULTS.flushTimeout}]` })
    .option('shutdown-grace', { type: 'number', requiresArg: true, group: TIMEOUT_GROUP, describe: `on SIGINT/SIGTERM, time sessions get to finish [default: ${DEFAULTS.shutdownGrace}]` })
    .option('heartbeat', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: 'check every target: tcp, pg, redis, send, or an http(s):// URL ({host}, {port}: the target\'s) answering 2xx' })
    .option('heartbeat-send', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: 'with --heartbeat send: bytes to write (\\r \\n \\t \\0 \\\\ \\xHH escapes); omit if the server speaks first' })
    .option('heartbeat-expect', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: 'with --heartbeat send: the reply prefix that means up (same escapes)' })
    .option('heartbeat-interval', { type: 'number', requiresArg: true, group: HEARTBEAT_GROUP, describe: `time between checks of a target [default: ${HB.interval}]` })
    .option('heartbeat-timeout', { type: 'number', requiresArg: true, group: HEARTBEAT_GROUP, describe: `a check slower than this failed; at most the interval [default: ${HB.timeout}]` })
    .option('heartbeat-fall', { type: 'number', requiresArg: true, group: HEARTBEAT_GROUP, describe: `failed checks in a row that mark a target down [default: ${HB.fall}]` })
    .option('heartbeat-rise', { type: 'number', requiresArg: true, group: HEARTBEAT_GROUP, describe: `good checks in a row that mark it up again [default: ${HB.rise}]` })
    .option('on-down', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: `target marked down: kill (reset its sessions), drain (keep them, send new ones elsewhere), keep (only log) [default: ${HB.onDown}]` })
    .option('balance', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: 'first: the first healthy target; roundrobin: each healthy target in turn [default: first]' })
    .option('native', { type: 'boolean', default: true, describe: 'use the native socket helper (--no-native: Node setKeepAlive only)' })
    .option('log-level', { type: 'string', requiresArg: true, default: 'info', choices: LOG_LEVELS as unknown as string[] })
    .option('log-format', { type: 'string', requiresArg: true, default: 'auto', choices: ['auto', 'json', 'pretty'], describe: 'auto: pretty on a terminal, JSON otherwise' })
    .option('version', { type: 'boolean', describe: 'show the version and whether the native helper is in use' })
    .help('help')
    .alias('help', 'h')
    .strict()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((message, err) => {
      throw err instanceof KaError ? err : usageError(message ?? err?.message ?? 'bad arguments', argv)
    })
}

/** yargs' own messages, turned into one line that names the flag. */
function usageError(message: string, argv: string[]): ConfigError {
  const unknown = /^Unknown arguments?: (.+)$/.exec(message)
  if (unknown) {
    const first = unknown[1]!.split(', ')[0]!
    if (argv.includes(first)) return new ConfigError(first, 'unknown command (see ka-proxy --help)')
    return new ConfigError(first.length === 1 ? `-${first}` : `--${first}`, 'unknown option (see ka-proxy --help)')
  }
  const invalid = /^Invalid values:\s+Argument: ([\w-]+), Given: (.+), Choices: (.+)$/s.exec(message)
  if (invalid) return new ConfigError(`--${invalid[1]}`, `must be one of ${invalid[3]!.trim()} (got ${invalid[2]!.trim()})`)
  const missing = /^Not enough arguments following: (.+)$/.exec(message)
  if (missing) return new ConfigError(`--${missing[1]}`, 'needs a value')
  return new ConfigError('arguments', message.replace(/\s+/g, ' '))
}

function rawOptions(args: Record<string, unknown>): RawOptions {
  const n = (key: string): number | undefined => args[key] as number | undefined
  return {
    listen: args.listen,
    target: args.target,
    idle: n('idle'),
    interval: n('interval'),
    count: n('count'),
    userTimeout: n('userTimeout'),
    clientIdle: n('clientIdle'),
    clientInterval: n('clientInterval'),
    clientCount: n('clientCount'),
    clientUserTimeout: n('clientUserTimeout'),
    targetIdle: n('targetIdle'),
    targetInterval: n('targetInterval'),
    targetCount: n('targetCount'),
    targetUserTimeout: n('targetUserTimeout'),
    connectTimeout: n('connectTimeout'),
    halfCloseTimeout: n('halfCloseTimeout'),
    flushTimeout: n('flushTimeout'),
    shutdownGrace: n('shutdownGrace'),
    native: args.native as boolean | undefined,
    balance: args.balance,
    heartbeat: {
      type: args.heartbeat,
      send: args.heartbeatSend,
      expect: args.heartbeatExpect,
      interval: n('heartbeatInterval'),
      timeout: n('heartbeatTimeout'),
      fall: n('heartbeatFall'),
      rise: n('heartbeatRise'),
      onDown: args.onDown,
    },
  }
}

/** Repeated values (`--idle 5 --idle 6`) arrive as arrays; the last one wins, as in most tools. */
function lastValues(args: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(args)) out[k] = Array.isArray(v) && k !== '_' ? v[v.length - 1] : v
  return out
}

export async function run(argv: string[]): Promise<number> {
  const args = lastValues(buildParser(argv).parseSync() as Record<string, unknown>)
  if (args.version) {
    process.stdout.write(`ka-proxy ${VERSION}\n${nativeStatusLine(new KeepaliveApplier())}\n`)
    return 0
  }
  if ((args._ as unknown[])[0] === 'doctor') return runDoctor((line) => process.stdout.write(`${line}\n`))
  if ((args._ as unknown[]).length > 0) {
    throw new ConfigError(String((args._ as unknown[])[0]), 'unknown command (see ka-proxy --help)')
  }
  const options = resolveOptions(rawOptions(args))
  const logger = createLogger({ level: args.logLevel as LogLevel, format: args.logFormat as LogFormat })
  const keepalive = new KeepaliveApplier({ native: options.native })
  if (!keepalive.native) logger.warn({ reason: keepalive.fallbackReason }, nativeStatusLine(keepalive))
  const listener = new ProxyListener(options, keepalive, logger)
  const info = await listener.start()
  logger.info(
    {
      address: info.address,
      target: options.targets.map((t) => formatEndpoint(t.host, t.port)).join(','),
      heartbeat: options.heartbeat && describeHeartbeat(options.heartbeat),
      clientKeepalive: info.clientKeepalive,
      targetKeepalive: info.targetKeepalive,
      native: keepalive.native,
      inherited: info.inherited,
    },
    'listening',
  )
  logger.info(`client leg: ${describeKeepalive(info.clientKeepalive)}; target leg: ${describeKeepalive(info.targetKeepalive)}`)
  return waitForStop(listener, logger, options.shutdownGrace * 1000)
}

/** SIGINT/SIGTERM: stop accepting and drain; a second signal closes every session at once. */
function waitForStop(listener: ProxyListener, logger: Logger, graceMs: number): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: closing all sessions now')
        listener.terminate()
        return
      }
      stopping = true
      logger.info({ signal, sessions: listener.sessions.size }, 'shutting down')
      listener.stop(graceMs).then(() => {
        logger.info('stopped')
        logger.flush()
        resolve(0)
      }, (err: unknown) => {
        logger.error({ err }, 'shutdown failed')
        resolve(EXIT_FAILURE)
      })
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
}

function printError(err: unknown): number {
  if (err instanceof KaError) {
    process.stderr.write(`ka-proxy: ${err.message}\n`)
    return err.exitCode
  }
  const e = err as Error
  process.stderr.write(`ka-proxy: internal error: ${e?.message ?? String(err)}\n`)
  if (process.env.KA_PROXY_DEBUG) process.stderr.write(`${e?.stack}\n`)
  return EXIT_FAILURE
}

export async function main(argv = hideBin(process.argv)): Promise<void> {
  // A bug reached from one session must not take every other session down with it.
  process.on('uncaughtException', (err) => {
    process.stderr.write(`ka-proxy: uncaught exception (continuing): ${err.stack ?? String(err)}\n`)
  })
  try {
    process.exitCode = await run(argv)
  } catch (err) {
    process.exitCode = printError(err)
  }
}
