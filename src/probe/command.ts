// `ka-proxy probe` and `ka-proxy probe-server`: their flags, checked into ProbeSettings, and
// the run. Exit codes: 0 measured, 1 nothing died up to --max, 2 bad input, 3 the target was
// not reachable (or did not answer the check) at the start.

import yargs, { type Argv } from 'yargs'
import { parseListen, parseTarget } from '../config/endpoint.ts'
import { decodeBytes } from '../config/heartbeat.ts'
import { ConfigError, KaError } from '../errors.ts'
import { checkNodeInternals } from '../node-internals.ts'
import { PROBE_CHECKS, PROBE_CHECK_NAMES } from './checks.ts'
import { ProgressDisplay } from './progress.ts'
import { formatReport, exitStatus, toJson } from './report.ts'
import { ProbeRunner, type ProbeResult, type ProbeSettings } from './runner.ts'
import { runProbeServer } from './server.ts'

export const PROBE_COMMANDS = ['probe', 'probe-server'] as const

/** Turns a yargs message into one line naming the flag (the main command line's rules). */
export type UsageError = (message: string, argv: string[]) => KaError

const DEFAULTS = {
  check: 'echo',
  max: '1h',
  resolution: '2s',
  connections: 16,
  replyTimeout: '5s',
  connectTimeout: '10s',
} as const

const UNITS: Record<string, number> = { '': 1, s: 1, m: 60, min: 60, h: 3600 }

/** 90, "90s", "20m", "2h", "1h30m" → seconds. */
export function parseDuration(value: unknown, key: string): number {
  const text = String(value ?? '').trim()
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)\s*(h|min|m|s|)/g)]
  const whole = parts.map((p) => p[0]).join('')
  if (text === '' || parts.length === 0 || whole.replace(/\s/g, '') !== text.replace(/\s/g, '')) {
    throw new ConfigError(key, `expected a duration such as 90, 90s, 20m, 2h or 1h30m (got "${text}")`)
  }
  const seconds = parts.reduce((sum, p) => sum + Number(p[1]) * UNITS[p[2]!]!, 0)
  if (!(seconds > 0)) throw new ConfigError(key, `must be longer than 0 (got "${text}")`)
  return seconds
}

function probeParser(argv: string[], usageError: UsageError): Argv {
  const parser = yargs(argv)
    .scriptName('ka-proxy probe')
    .version(false)
    .usage(
      'Usage: ka-proxy probe --target host:port [--check echo|redis|send|pg] [options]\n\n' +
        'Measures how long the path to the target keeps an idle connection, how it drops it, and\n' +
        'whether TCP keepalive holds it; recommends the ka-proxy settings that fit.\n' +
        'Durations: seconds, or 90s, 20m, 2h, 1h30m.',
    )
    .option('target', { type: 'string', requiresArg: true, demandOption: true, describe: 'host:port to measure the path to' })
    .option('check', { type: 'string', requiresArg: true, default: DEFAULTS.check, choices: PROBE_CHECK_NAMES, describe: 'the exchange that proves a connection alive; echo: against ka-proxy probe-server' })
    .option('dsn', { type: 'string', requiresArg: true, describe: 'with --check pg: postgres:// URL to log in with (PG* variables work too); its host and port are replaced by --target\'s' })
    .option('send', { type: 'string', requiresArg: true, describe: 'with --check send: bytes to write (\\r \\n \\t \\0 \\\\ \\xHH escapes)' })
    .option('expect', { type: 'string', requiresArg: true, describe: 'with --check send: the reply prefix that means alive' })
    .option('max', { type: 'string', requiresArg: true, default: DEFAULTS.max, describe: 'longest idle time to try' })
    .option('resolution', { type: 'string', requiresArg: true, default: DEFAULTS.resolution, describe: 'stop bisecting when the timeout is known this closely (or to 5 %, whichever is larger)' })
    .option('connections', { type: 'number', requiresArg: true, default: DEFAULTS.connections, describe: 'connections open to the target at once, at most (4..1024)' })
    .option('reply-timeout', { type: 'string', requiresArg: true, default: DEFAULTS.replyTimeout, describe: 'an exchange unanswered this long means the connection is silently dead' })
    .option('connect-timeout', { type: 'string', requiresArg: true, default: DEFAULTS.connectTimeout, describe: 'give up connecting after this' })
    .option('keepalive-check', { type: 'boolean', default: true, describe: 'check whether TCP keepalive holds the path once a timeout is found (--no-keepalive-check: skip)' })
    .option('native', { type: 'boolean', default: true, describe: 'set keepalive with the native helper (--no-native: Node setKeepAlive, interval fixed at 1 s)' })
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON object instead of the report' })
  return strict(parser, argv, usageError)
}

function serverParser(argv: string[], usageError: UsageError): Argv {
  const parser = yargs(argv)
    .scriptName('ka-proxy probe-server')
    .version(false)
    .usage('Usage: ka-proxy probe-server --listen [host:]port\n\nAn echo responder to run next to the server, for ka-proxy probe --target <host>:<port>.')
    .option('listen', { type: 'string', requiresArg: true, demandOption: true, describe: '[host:]port to accept probes on (bare port: all interfaces)' })
  return strict(parser, argv, usageError)
}

/** --help, unknown flags refused, and every yargs complaint as one line naming the flag. */
function strict(parser: Argv, argv: string[], usageError: UsageError): Argv {
  const fail = (message: string | null, err: Error | undefined): never => {
    throw err instanceof KaError ? err : usageError(message ?? err?.message ?? 'bad arguments', argv)
  }
  return parser
    .locale('en')
    .parserConfiguration({ 'duplicate-arguments-array': false })
    .help('help')
    .alias('help', 'h')
    .strict()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail(fail)
}

type Args = Record<string, unknown>

export async function probeSettings(args: Args): Promise<ProbeSettings & { json: boolean }> {
  const target = parseTarget(args.target)
  const check = String(args.check)
  const max = parseDuration(args.max, '--max')
  const resolution = parseDuration(args.resolution, '--resolution')
  if (max < resolution) throw new ConfigError('--max', `must be at least the resolution, ${resolution} s (got ${max} s)`)
  const connections = args.connections as number
  if (!Number.isInteger(connections) || connections < 4 || connections > 1024) {
    throw new ConfigError('--connections', `must be a whole number from 4 to 1024 (got ${String(connections)})`)
  }
  const send = args.send === undefined ? undefined : decodeBytes(args.send, '--send')
  const expect = args.expect === undefined ? undefined : decodeBytes(args.expect, '--expect')
  if (check === 'send') {
    if (!send || send.length === 0) throw new ConfigError('--send', 'needed with --check send: the probe must ask something after the idle time')
    if (!expect || expect.length === 0) throw new ConfigError('--expect', 'needed with --check send')
  } else {
    for (const [key, v] of [['--send', send], ['--expect', expect]] as const) if (v) throw new ConfigError(key, 'only with --check send')
  }
  if (args.dsn !== undefined && check !== 'pg') throw new ConfigError('--dsn', 'only with --check pg')
  return {
    target,
    check: await PROBE_CHECKS[check]!({ dsn: args.dsn as string | undefined, send, expect }),
    max,
    resolution,
    connections,
    replyTimeout: parseDuration(args.replyTimeout, '--reply-timeout'),
    connectTimeout: parseDuration(args.connectTimeout, '--connect-timeout'),
    keepaliveCheck: args.keepaliveCheck as boolean,
    native: args.native as boolean,
    json: args.json as boolean,
  }
}

/** Runs `probe ...` or `probe-server ...` (argv starts with the command). */
export async function runProbeCommand(argv: string[], usageError: UsageError): Promise<number> {
  const [command, ...rest] = argv
  const write = (text: string): void => void process.stdout.write(text)
  if (command === 'probe-server') {
    const args = serverParser(rest, usageError).parseSync() as Args
    return runProbeServer(parseListen(args.listen), write)
  }
  const settings = await probeSettings(probeParser(rest, usageError).parseSync() as Args)
  // The keepalive check sets options through the native helper, which needs them (as the proxy does).
  await checkNodeInternals()
  const display = new ProgressDisplay()
  const runner = new ProbeRunner(settings, () => display.draw())
  const show = (result: ProbeResult): void => write(settings.json ? `${JSON.stringify(toJson(result, settings))}\n` : formatReport(result, settings))
  // Runs may take hours: Ctrl-C prints what was measured so far; exiting closes every connection.
  const onInterrupt = (): void => {
    display.stop()
    const partial = runner.result()
    partial.notes.push('interrupted (SIGINT): these are the figures measured until then')
    show(partial)
    process.exit(EXIT_INTERRUPTED)
  }
  process.once('SIGINT', onInterrupt)
  display.start(() => runner.progress())
  let result
  try {
    result = await runner.run()
  } finally {
    display.stop()
    process.off('SIGINT', onInterrupt)
  }
  show(result)
  return exitStatus(result)
}

/** 128 + SIGINT, as shells report it. */
const EXIT_INTERRUPTED = 130
