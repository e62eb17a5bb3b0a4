// Command line: flags -> checked options -> a running proxy. main() maps run()'s outcome
// to an exit code: 0 after a clean stop, 2 for bad input, 3 for a listen address in use.

import yargs, { type Argv } from 'yargs'
import { hideBin } from 'yargs/helpers'
import type { Logger } from 'pino'
import { DEFAULTS } from './config/options.ts'
import { ignoredByFallback, resolveAppConfig, type AppConfig, type CliInput } from './config/resolve.ts'
import { flagOf, KEEPALIVE_FIELDS, KEEPALIVE_SCOPES, LEGS, type Leg } from './config/keys.ts'
import { loadConfigFile, loadConfigFileOffLoop } from './config/file.ts'
import { WorkerGroup } from './workers.ts'
import { ProxyApp } from './app.ts'
import { formatEndpoint } from './config/endpoint.ts'
import { PROFILE_NAMES, profilesTable } from './keepalive/profiles.ts'
import { HEARTBEAT_DEFAULTS as HB, HEARTBEAT_FLAGS } from './config/heartbeat.ts'
import { ConfigError, EXIT_FAILURE, EXIT_INTERNAL, KaError } from './errors.ts'
import { SocketControl } from './socket-control.ts'
import { DEFAULT_KEEPALIVE, describeKeepalive, type KeepaliveSettings } from './keepalive/settings.ts'
import { createLogger } from './log.ts'
import { checkLogFile, LOG_DEFAULTS, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from './config/log.ts'
import { nativeStatusLine, runDoctor } from './doctor.ts'
import { chooseRelay } from './transport/registry.ts'
import { VERSION } from './version.ts'
import { ServiceNotifier } from './notify.ts'
import { checkNodeInternals } from './node-internals.ts'
import { loadNative } from './native.ts'
import { Handover, Upgrader } from './upgrade.ts'
import { writePairSecret } from './config/pair-secret.ts'
import { answerUpgrade, runUpgrade, upgradeTarget } from './upgrade-command.ts'

// Times take seconds (30, 0.5) or a duration with units (1500ms, 30s, 5m, 1h, 1m30s).
const KEEPALIVE_GROUP = 'Keepalive (both legs; times in seconds or 30s, 5m, 1h):'
const LEG_GROUP = 'Per-leg overrides:'
const TIMEOUT_GROUP = 'Timeouts (seconds or 1500ms, 30s, 5m):'
const HEARTBEAT_GROUP = 'Heartbeats and failover (times in seconds or 500ms, 2s):'
const ADMIN_GROUP = 'Admin API:'
const PAIR_GROUP = 'Paired mode (two ka-proxies over a resumable TLS link):'

function buildParser(argv: string[]): Argv {
  const d = DEFAULT_KEEPALIVE
  let parser = yargs(argv)
    .scriptName('ka-proxy')
    .version(false)
    .usage('Usage: ka-proxy --listen [host:]port --target host:port [options]\n       ka-proxy --config FILE [options]\n       ka-proxy check --config FILE\n       ka-proxy upgrade [--pid PID | --pid-file FILE]\n       ka-proxy doctor | profiles | status [--admin URL] | failback [--admin URL] [--route NAME] | completion')
    // Messages in one language whatever LANG says: errors are one line a user can search for.
    .locale('en')
    // KA_PROXY_<FLAG> for every flag; envOnlyValueFlags() hides the variables that are not one.
    .env('KA_PROXY')
    // A repeated flag (--idle 5 --idle 6): the last one wins, as in most tools.
    .parserConfiguration({ 'duplicate-arguments-array': false })
    .completion('completion', 'print a bash/zsh completion script (ka-proxy completion >> ~/.bashrc)')
    .command('check', 'validate the config (--config FILE and flags) without binding anything: exit 0 if valid, 2 if not')
    .command('upgrade', 'upgrade the running ka-proxy (SIGUSR2: a new process from the release on disk takes its sockets and sessions) and wait: exit 0 once the new one serves, 1 with the reason if not; the process is --pid, --pid-file or $MAINPID (systemd ExecReload=)')
    .command('doctor', 'check that keepalive options can be set and read back on this machine')
    .command('profiles', 'list the keepalive profiles and the detection time each implies')
    .command('status', 'show health and open sessions of a running ka-proxy (through its admin API)')
    .command('failback', 'send new connections of every route (or --route NAME) back to its first target (--failback manual; through the admin API)')
    .command('probe', 'measure how long the path to a server keeps an idle connection (ka-proxy probe --help)')
    .command('pair-key [file]', 'write a new pair secret to FILE (mode 0600): ka-proxy pair-key FILE [--force]')
    .command('probe-server', 'echo responder to run next to the server for ka-proxy probe (ka-proxy probe-server --help)')
    .option('config', { type: 'string', requiresArg: true, describe: 'YAML or JSON file with one or more routes; flags override a one-route file; SIGHUP re-reads it' })
    .option('listen', { type: 'string', requiresArg: true, describe: '[host:]port to accept clients on (bare port: all interfaces)' })
    .option('target', { type: 'string', requiresArg: true, describe: 'host:port[,host:port...] to relay to, first healthy wins; names are resolved for every connection' })
    .option('idle', { type: 'string', requiresArg: true, group: KEEPALIVE_GROUP, describe: `TCP_KEEPIDLE: idle time before the first probe, 1..32767 [default: ${d.idle}]` })
    .option('interval', { type: 'string', requiresArg: true, group: KEEPALIVE_GROUP, describe: `TCP_KEEPINTVL: time between probes, 1..32767 [default: ${d.interval}]` })
    .option('count', { type: 'number', requiresArg: true, group: KEEPALIVE_GROUP, describe: `TCP_KEEPCNT: unanswered probes before the peer is dead, 1..127 [default: ${d.count}]` })
    .option('user-timeout', { type: 'string', requiresArg: true, group: KEEPALIVE_GROUP, describe: 'TCP_USER_TIMEOUT: max time sent data may stay unacknowledged; 0 disables [default: idle + interval × count]' })
    .option('profile', { type: 'string', requiresArg: true, group: KEEPALIVE_GROUP, describe: `named preset under the explicit values: ${PROFILE_NAMES.join(', ')} (see ka-proxy profiles)` })
  for (const leg of LEGS) {
    for (const field of KEEPALIVE_FIELDS) {
      const type = field === 'count' ? 'number' : 'string'
      parser = parser.option(flagOf(['keepalive', leg, field]).slice(2), { type, requiresArg: true, group: LEG_GROUP, describe: `${flagOf(['keepalive', 'shared', field])} for the ${leg} leg only` })
    }
  }
  return parser
    .option('connect-timeout', { type: 'string', requiresArg: true, group: TIMEOUT_GROUP, describe: `give up connecting to the target after this [default: ${DEFAULTS.connectTimeout}]` })
    .option('half-close-timeout', { type: 'string', requiresArg: true, group: TIMEOUT_GROUP, describe: `close a session this long after only one side ended it [default: ${DEFAULTS.halfCloseTimeout}]` })
    .option('flush-timeout', { type: 'string', requiresArg: true, group: TIMEOUT_GROUP, describe: `time a surviving peer gets to take queued data before it is reset [default: ${DEFAULTS.flushTimeout}]` })
    .option('shutdown-grace', { type: 'string', requiresArg: true, group: TIMEOUT_GROUP, describe: `on SIGINT/SIGTERM, time sessions get to finish [default: ${DEFAULTS.shutdownGrace}]` })
    .option('heartbeat', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: 'check every target: tcp, pg, redis, send, or an http(s):// URL ({host}, {port}: the target\'s) answering 2xx' })
    .option('heartbeat-send', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: 'with --heartbeat send: bytes to write (\\r \\n \\t \\0 \\\\ \\xHH escapes); omit if the server speaks first' })
    .option('heartbeat-expect', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: 'with --heartbeat send: the reply prefix that means up (same escapes)' })
    .option('heartbeat-interval', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: `time between checks of a target [default: ${HB.interval}]` })
    .option('heartbeat-timeout', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: `a check slower than this failed; at most the interval [default: ${HB.timeout}]` })
    .option('heartbeat-fall', { type: 'number', requiresArg: true, group: HEARTBEAT_GROUP, describe: `failed checks in a row that mark a target down [default: ${HB.fall}]` })
    .option('heartbeat-rise', { type: 'number', requiresArg: true, group: HEARTBEAT_GROUP, describe: `good checks in a row that mark it up again [default: ${HB.rise}]` })
    .option('on-down', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: `target marked down: kill (reset its sessions), drain (keep them, send new ones elsewhere), keep (only log) [default: ${HB.onDown}]` })
    .option('failback', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: 'after a failover (connect failed or target down): auto returns new connections to the first target once it is up again; manual keeps them on the one in use until it fails or until ka-proxy failback [default: manual]' })
    .option('balance', { type: 'string', requiresArg: true, group: HEARTBEAT_GROUP, describe: 'first: the first healthy target; roundrobin: each healthy target in turn [default: first]' })
    .option('pair-listen', { type: 'string', requiresArg: true, group: PAIR_GROUP, describe: 'far end: [host:]port to accept pair links on (instead of --listen); their sessions go to --target' })
    .option('pair-connect', { type: 'string', requiresArg: true, group: PAIR_GROUP, describe: 'near end: host:port of the far end (instead of --target); clients of --listen travel over the link' })
    .option('pair-secret-file', { type: 'string', requiresArg: true, group: PAIR_GROUP, describe: 'the secret both ends share (ka-proxy pair-key FILE writes one)' })
    .option('pair-heartbeat', { type: 'string', requiresArg: true, group: PAIR_GROUP, describe: `a heartbeat crosses the link when it sent nothing for this; 3 x without a frame from the peer: dead [default: ${DEFAULTS.pairHeartbeat}]` })
    .option('resume-window', { type: 'string', requiresArg: true, group: PAIR_GROUP, describe: `how long a session waits for its link to come back [default: ${DEFAULTS.resumeWindow}]` })
    .option('force', { type: 'boolean', group: PAIR_GROUP, describe: 'for pair-key: replace an existing file' })
    .option('max-connections', { type: 'number', requiresArg: true, describe: 'refuse clients (RST) beyond this many open sessions [default: no limit]' })
    .option('backlog', { type: 'number', requiresArg: true, describe: 'connections the kernel queues before they are accepted (listen backlog) [default: net.core.somaxconn]' })
    .option('admin', { type: 'string', requiresArg: true, group: ADMIN_GROUP, describe: 'serve /metrics, /healthz, /sessions on host:port (loopback unless --admin-token); for status: its URL' })
    .option('admin-token', { type: 'string', requiresArg: true, group: ADMIN_GROUP, describe: 'bearer token the admin API requires (at least 16 characters)' })
    .option('pid', { type: 'string', requiresArg: true, describe: 'for upgrade: the running process [default: the pid in --pid-file, else $MAINPID]' })
    .option('route', { type: 'string', requiresArg: true, group: ADMIN_GROUP, describe: 'for failback: the one route to fail back [default: every route]' })
    .option('native', { type: 'boolean', default: true, describe: 'use the native socket helper (--no-native: Node setKeepAlive only)' })
    .option('log-level', { type: 'string', requiresArg: true, choices: LOG_LEVELS as unknown as string[], describe: `[default: ${LOG_DEFAULTS.level}]` })
    .option('log-format', { type: 'string', requiresArg: true, choices: LOG_FORMATS as unknown as string[], describe: `auto: pretty (one line per event) on a terminal, JSON otherwise [default: ${LOG_DEFAULTS.format}]` })
    .option('log-file', { type: 'string', requiresArg: true, describe: 'append log lines to this file instead of stdout; SIGHUP reopens it (for logrotate)' })
    .option('workers', { type: 'string', requiresArg: true, describe: 'event loops (threads) that accept and relay, each with its own pump, behind the same listen addresses; auto: one per core [default: 1]' })
    .option('pid-file', { type: 'string', requiresArg: true, describe: 'write the serving process\'s pid to this file (atomically); removed on a clean exit' })
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

function cliInput(args: Record<string, unknown>): CliInput {
  const n = (key: string): number | undefined => args[key] as number | undefined
  // Times arrive as written ("30", "30s", "1500ms"); the options code turns them into seconds.
  const d = (key: string): string | undefined => args[key] as string | undefined
  const str = (key: string): string | undefined => args[key] as string | undefined
  return {
    config: str('config'),
    admin: str('admin'),
    adminToken: str('adminToken'),
    log: { level: args.logLevel as LogLevel | undefined, format: args.logFormat as LogFormat | undefined, file: str('logFile') },
    pidFile: str('pidFile'),
    workers: str('workers'),
    maxConnections: n('maxConnections'),
    backlog: n('backlog'),
    listen: args.listen,
    target: args.target,
    // One loop over the scopes: --idle, --client-idle, --target-idle and so on, as flagOf names them.
    keepalive: Object.fromEntries(KEEPALIVE_SCOPES.map((scope) => [scope, Object.fromEntries(KEEPALIVE_FIELDS.map((field) => [field, args[flagOf(['keepalive', scope, field]).slice(2)]]))])),
    connectTimeout: d('connectTimeout'),
    halfCloseTimeout: d('halfCloseTimeout'),
    flushTimeout: d('flushTimeout'),
    shutdownGrace: d('shutdownGrace'),
    native: args.native as boolean | undefined,
    balance: args.balance,
    failback: args.failback,
    heartbeat: Object.fromEntries(Object.entries(HEARTBEAT_FLAGS).map(([key, flag]) => [key, args[flag.slice(2)]])),
    pairListen: args.pairListen,
    pairConnect: args.pairConnect,
    pairSecretFile: str('pairSecretFile'),
    pairHeartbeat: d('pairHeartbeat'),
    resumeWindow: d('resumeWindow'),
  }
}

/**
 * Parses with yargs reading KA_PROXY_<FLAG> (KA_PROXY_TARGET, KA_PROXY_IDLE, KA_PROXY_ADMIN_TOKEN...)
 * for the value flags only; flags on the command line win. Other KA_PROXY_* variables are hidden
 * from it while it parses, so strict parsing does not take them for unknown flags and a boolean
 * such as --version cannot be switched on from the environment (KA_PROXY_NATIVE=0 is read by the
 * addon loader, KA_PROXY_DEBUG and KA_PROXY_RELAY by run()). Empty variables count as unset.
 */
function parseArgs(argv: string[]): Record<string, unknown> {
  const parser = buildParser(argv)
  const options = (parser as unknown as { getOptions(): { string: string[]; number: string[] } }).getOptions()
  const valueFlags = new Set([...options.string, ...options.number].map((f) => f.toUpperCase().replace(/-/g, '_')))
  const hidden: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('KA_PROXY_') || value === undefined) continue
    if (valueFlags.has(name.slice('KA_PROXY_'.length)) && value !== '') continue
    hidden[name] = value
    delete process.env[name]
  }
  try {
    return parser.parseSync() as Record<string, unknown>
  } finally {
    Object.assign(process.env, hidden)
  }
}

export async function run(argv: string[]): Promise<number> {
  // Their own flags and parser; KA_PROXY_* variables are the proxy's, not theirs. Loaded only
  // for them: the proxy's start (and so an upgrade's) does not pay for their modules.
  if (argv[0] === 'probe' || argv[0] === 'probe-server') return (await import('./probe/command.ts')).runProbeCommand(argv, usageError)
  const args = parseArgs(argv)
  // Before anything loads the native helper: it is not used where Node's internals changed.
  await checkNodeInternals()
  if (args.version) {
    const native = new SocketControl({ native: args.native as boolean | undefined })
    process.stdout.write(`ka-proxy ${VERSION}\n${nativeStatusLine(native)}\n`)
    return 0
  }
  const command = (args._ as unknown[])[0]
  const write = (text: string): void => void process.stdout.write(text)
  if (command === 'doctor') return runDoctor((line) => write(`${line}\n`))
  if (command === 'profiles') {
    write(`${profilesTable()}\n`)
    return 0
  }
  if (command === 'status') return (await import('./admin/status.ts')).runStatus(String(args.admin ?? DEFAULT_ADMIN), args.adminToken as string | undefined, write)
  if (args.route !== undefined && command !== 'failback') throw new ConfigError('--route', 'only goes with the failback command')
  if (args.pid !== undefined && command !== 'upgrade') throw new ConfigError('--pid', 'only goes with the upgrade command')
  if (command === 'upgrade') return runUpgrade(upgradeTarget(args.pid, args.pidFile as string | undefined, process.env.MAINPID), write)
  if (command === 'failback') return (await import('./admin/status.ts')).runFailback(String(args.admin ?? DEFAULT_ADMIN), args.adminToken as string | undefined, args.route as string | undefined, write)
  if (args.force !== undefined && command !== 'pair-key') throw new ConfigError('--force', 'only goes with the pair-key command')
  if (command === 'pair-key') return runPairKey(args, write)
  if (command !== undefined && command !== 'check') throw new ConfigError(String(command), 'unknown command (see ka-proxy --help)')
  const input = cliInput(args)
  // Read once: worker threads (--workers) resolve the same file, not a copy read later.
  const file = input.config === undefined ? undefined : loadConfigFile(input.config)
  const config = resolveAppConfig(input, file)
  const log = config.log
  if (log.file !== undefined) checkLogFile(log.file, input.log?.file !== undefined ? '--log-file' : `${input.config}: log.file`, command !== 'check')
  if (command === 'check') {
    write(checkReport(config, input.config))
    return 0
  }
  const { logger, reopen, write: writeLines, pretty } = await createLogger(log)
  const sockets = new SocketControl({ native: input.native })
  if (!sockets.native) {
    const ignored = ignoredByFallback(input)
    const what = ignored.length > 0 ? `; these settings are NOT applied: ${ignored.join(', ')}` : ''
    logger.warn({ reason: sockets.fallbackReason, ignored }, `${nativeStatusLine(sockets)}${what}`)
  }
  const addon = sockets.native ? loadNative() : undefined
  const binding = addon?.ok ? addon.binding : undefined
  // Where --workers came from, for an error about it.
  const workersKey = input.workers !== undefined ? '--workers' : `${input.config}: workers`
  if (config.workers > 1 && binding === undefined) {
    throw new ConfigError(workersKey, `${config.workers} workers need the native helper (each accepts on a duplicate of the listening sockets), which is not in use (${sockets.fallbackReason ?? 'disabled'}); use 1`)
  }
  // Started by an upgrade: the old process's listening sockets are taken over, not bound anew.
  const handover = Handover.fromEnv(binding)
  const inherited = handover?.receive(config.routes.map((r) => r.name))
  // The one read of KA_PROXY_RELAY: which transport moves the bytes (the native pump by default).
  const app = new ProxyApp(sockets, logger, chooseRelay(sockets, process.env.KA_PROXY_RELAY))
  runningLogger = logger
  let unused: string[] = []
  try {
    // v5: the listening sockets handed over accept only once the old process has committed.
    await app.start(config, inherited, handover?.batched === true)
  } finally {
    unused = inherited?.closeRest() ?? []
  }
  try {
    config.pidFile?.write()
  } catch (err) {
    await app.stop(0)
    throw err
  }
  for (const route of config.routes) {
    // What the kernel gets: without the native helper, only what setKeepAlive can set.
    logger.info(`${route.name}: ${describeLegs((leg) => sockets.effective(route.keepalive[leg]))}`)
  }
  const notifier = new ServiceNotifier(logger)
  // --workers: the worker threads accept on this thread's listening sockets, so they start once
  // those listen (after an upgrade's hand-over, once it is done).
  const startWorkers = async (): Promise<void> => {
    if (config.workers <= 1) return
    const workers = new WorkerGroup({ input, file, logger, write: writeLines, pretty, native: binding! }, () => ({ listeners: app.workerListeners(), targets: app.targetStates() }))
    const started = performance.now()
    await workers.start(config.workers - 1)
    app.attachWorkers(workers)
    app.balanceLoops(workers.shared, 0)
    logger.info({ workers: config.workers, threads: workers.size, ms: Math.round(performance.now() - started) }, 'workers started')
  }
  // After an upgrade the sessions are here already: this thread serves on alone rather than drop them.
  const workersNotStarted = (err: unknown): void => {
    logger.error({ workers: config.workers, error: (err as Error).message }, 'upgrade: the worker threads cannot start; this process serves on one loop')
  }
  // Sessions handed over take the descriptors received for them; a refused one's close here.
  const closeRefused = (s: { fds: number[] }): void => s.fds.forEach((fd) => binding!.closeFd(fd))
  if (handover !== undefined && inherited !== undefined && handover.batched) {
    // v5: 'ready' once every route is built; after 'go' this process accepts on the listening
    // sockets handed over, and the sessions come a message at a time, each started as it comes.
    try {
      handover.ready(app.listeners().length + app.deferredListeners)
    } catch (err) {
      process.stderr.write(`ka-proxy: ${(err as Error).message}\n`)
      config.pidFile?.remove()
      process.exit(EXIT_FAILURE)
    }
    const started = performance.now()
    await app.listenHandedOver()
    void handover.receiveBatches((sessions) => {
      const { adopted, refused } = app.adoptSessions(sessions, inherited, { more: true, own: true, release: closeRefused })
      for (const a of adopted) a.start()
      return refused
    }).then(({ sessions, refused, gone }) => {
      app.finishAdoption()
      const fields = { from: inherited.from, listeners: app.listeners().length, notTaken: unused, sessions, refused, ms: Math.round(performance.now() - started) }
      if (gone === undefined) logger.info(fields, 'upgrade: took over the listeners and sessions')
      else logger.error({ ...fields, reason: gone }, `upgrade: the hand-over ended early (${gone}); the sessions not sent stay with the old process`)
      return startWorkers().catch(workersNotStarted)
    })
  } else if (handover !== undefined && inherited !== undefined) {
    // The sessions handed over are built now and move bytes only once the old process knows
    // which it keeps (those refused here): until then it may still take them all back.
    const started = performance.now()
    const { adopted, refused } = app.adoptSessions(inherited.sessions, inherited, { own: true, release: closeRefused })
    // The old process tells systemd (MAINPID=, READY=1) once it hears this.
    try {
      handover.ready(app.listeners().length, refused)
    } catch (err) {
      // Not confirmed: the old process carries every session on. Out at once, touching none of
      // them (a graceful stop would end them with a FIN), and the pid file is the old one's again.
      process.stderr.write(`ka-proxy: ${(err as Error).message}\n`)
      config.pidFile?.remove()
      process.exit(EXIT_FAILURE)
    }
    for (const a of adopted) a.start()
    logger.info(
      { from: inherited.from, listeners: app.listeners().length, notTaken: unused, sessions: adopted.length, refused: refused.length, ms: Math.round(performance.now() - started) },
      'upgrade: took over the listeners and sessions',
    )
    await startWorkers().catch(workersNotStarted)
  } else {
    try {
      await startWorkers()
    } catch (err) {
      await app.stop(0)
      config.pidFile?.remove()
      throw new ConfigError(workersKey, `cannot start the worker threads: ${(err as Error).message}`)
    }
    notifier.ready(servingStatus(app))
  }
  const upgrader = binding === undefined ? undefined : new Upgrader(binding, logger)
  const code = await waitForStop(app, logger, input, notifier, reopen, upgrader)
  config.pidFile?.remove()
  return code
}

/** Closes a descriptor with an RST (the upgrade is only offered where the native helper is in use). */
function closeResetFd(fd: number): void {
  const load = loadNative()
  if (load.ok) load.binding.closeReset(fd)
}

/** `ka-proxy pair-key FILE [--force]`: a new secret for both ends of a pair. */
function runPairKey(args: Record<string, unknown>, write: (text: string) => void): number {
  const file = args.file
  if (typeof file !== 'string' || file === '') throw new ConfigError('pair-key', 'needs one FILE to write the secret to (ka-proxy pair-key FILE)')
  writePairSecret(file, args.force === true)
  write(`${file}: a new pair secret (mode 0600); copy it to both ends\n`)
  return 0
}

/** The STATUS= line systemd shows. */
function servingStatus(app: ProxyApp): string {
  const names = app.config?.routes.map((r) => r.name) ?? []
  return `serving ${names.length} route${names.length === 1 ? '' : 's'}: ${names.join(', ')}`
}

/** "client leg idle 60 s, …; target leg idle 60 s, …" */
function describeLegs(settings: (leg: Leg) => KeepaliveSettings): string {
  return LEGS.map((leg) => `${leg} leg ${describeKeepalive(settings(leg))}`).join('; ')
}

/** What `ka-proxy check` prints for a valid config: one line per route, like haproxy -c. */
function checkReport(config: AppConfig, file: string | undefined): string {
  const lines = config.routes.map((r) => {
    const targets = r.targets.map((t) => formatEndpoint(t.host, t.port)).join(',')
    const pair = r.pair === undefined ? '' : ` (pair ${r.pair.role} end)`
    return `  ${r.name}: ${formatEndpoint(r.listen.host, r.listen.port)} -> ${targets}${pair}; ${describeLegs((leg) => r.keepalive[leg])}`
  })
  const admin = config.admin ? `; admin API on ${formatEndpoint(config.admin.listen.host, config.admin.listen.port)}` : ''
  const workers = config.workers > 1 ? `; ${config.workers} workers` : ''
  const n = config.routes.length
  return `${file ?? 'flags'}: valid, ${n} route${n === 1 ? '' : 's'}${admin}${workers}\n${lines.join('\n')}\n`
}

/** After an upgrade, sessions left in the old process end by themselves (the longest timer Node has). */
const UNBOUNDED_GRACE_MS = 2 ** 31 - 1

/** The admin address `ka-proxy status` asks when --admin is not given. */
const DEFAULT_ADMIN = 'http://127.0.0.1:9480'

/**
 * SIGINT/SIGTERM: stop accepting and drain; a second signal closes every session at once.
 * SIGHUP: reopen the log file, then re-read the config; one that fails validation is rejected
 * and the old one stays. SIGUSR2: the upgrade (src/upgrade.ts). (SIGUSR1 is left to Node: it starts the inspector.)
 */
function waitForStop(app: ProxyApp, logger: Logger, input: CliInput, notifier: ServiceNotifier, reopenLog: () => string | undefined, upgrader: Upgrader | undefined): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false
    let reloading = Promise.resolve()
    /** --workers: an upgrade gathering the worker threads' sessions, before the Upgrader runs. */
    let gathering = false
    const stopThenResolve = (graceMs: number): void => {
      app.stop(graceMs).then(() => {
        logger.info('stopped')
        logger.flush()
        resolve(0)
      }, (err: unknown) => {
        logger.error({ err }, 'shutdown failed')
        resolve(EXIT_FAILURE)
      })
    }
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: closing all sessions now')
        app.terminate()
        return
      }
      stopping = true
      const graceMs = (app.config?.shutdownGrace ?? 0) * 1000
      // During an upgrade: a new process that has not taken over is stopped and every session
      // handed over comes back here first, then all drain as after any SIGTERM. One that took
      // over already serves on; what stayed here drains.
      const upgrade = upgrader?.abort()
      logger.info({ signal, sessions: app.sessionCount, upgrading: upgrade !== undefined }, 'shutting down')
      notifier.stopping(`shutting down on ${signal}: draining ${app.sessionCount} sessions`)
      void (upgrade ?? Promise.resolve()).then(() => stopThenResolve(graceMs))
    }
    const onReload = (): void => {
      const file = reopenLog()
      if (file !== undefined) logger.info({ file }, 'log file reopened')
      reloading = reloading.then(async () => {
        if (stopping) return
        if (input.config === undefined) {
          if (file === undefined) logger.warn('SIGHUP ignored: no --config file to re-read and no --log-file to reopen')
          return
        }
        notifier.reloading(`reloading ${input.config}`)
        try {
          const file = await loadConfigFileOffLoop(input.config)
          const config = resolveAppConfig(input, file)
          const changes = await app.reload(config)
          // The level applies at once; a new format or file needs a restart.
          logger.level = config.log.level
          const workers = app.workers
          const rejected = workers === undefined ? [] : (await workers.reload(input, file)).filter((w) => w.error !== undefined)
          const running = (workers?.size ?? 0) + 1
          if (config.workers !== running) logger.warn({ workers: config.workers, running }, 'workers: a new count takes effect at a restart or an upgrade')
          logger.info({ config: input.config, ...changes, ...(workers !== undefined && { workers: running }), ...(rejected.length > 0 && { rejectedBy: rejected }) }, 'config reloaded')
          notifier.ready(servingStatus(app))
        } catch (err) {
          const message = err instanceof KaError ? err.message : String(err)
          logger.error({ config: input.config, error: message }, 'config reload rejected: keeping the running config')
          notifier.ready(`${servingStatus(app)} (reload rejected: ${message})`)
        }
      })
    }
    const onUpgrade = (): void => {
      // Refused at once: said to a waiting `ka-proxy upgrade` too. (One under way answers it when done.)
      const refuse = (why: string): void => {
        logger.warn(`SIGUSR2 ignored: ${why}`)
        answerUpgrade({ ok: false, reason: why })
      }
      if (stopping) return refuse('shutting down')
      if (upgrader === undefined) return refuse('the upgrade needs the native helper (descriptor passing); nothing changed')
      if (upgrader.running || gathering) {
        logger.warn('SIGUSR2 ignored: an upgrade is already under way')
        return
      }
      logger.info('upgrade: starting a new process')
      notifier.reloading('upgrading: starting a new ka-proxy')
      // --workers: the worker threads' sessions come to this thread first, and go with its own.
      gathering = app.workers !== undefined
      const gathered = app.gatherFromWorkers(closeResetFd).then((g) => {
        gathering = false
        if (g.sessions + g.refused > 0) logger.info({ sessions: g.sessions, refused: g.refused }, 'upgrade: the worker threads handed their sessions to the main thread')
      })
      void gathered.then(() => upgrader.start(app)).then((outcome) => {
        if (!outcome.ok) {
          app.workers?.resumeAccepting()
          logger.error({ reason: outcome.reason, newPid: outcome.pid }, `upgrade failed, still serving: ${outcome.reason}`)
          // A new process that wrote the pid file and then did not take over removed it.
          try {
            app.config?.pidFile?.write()
          } catch (err) {
            logger.error({ error: (err as Error).message }, 'pid file not written again after the failed upgrade')
          }
          if (!stopping) notifier.ready(`${servingStatus(app)} (upgrade failed)`)
          answerUpgrade({ ok: false, reason: outcome.reason })
          return
        }
        // systemd first: the reload a waiting `ka-proxy upgrade` ends must find the new main pid.
        notifier.mainPid(outcome.pid, `upgraded: pid ${outcome.pid} serves`)
        answerUpgrade({ ok: true, pid: outcome.pid, sessions: outcome.sessions, stayed: app.sessionCount, ms: outcome.ms })
        void app.releaseAdmin()
        // A far end's links close now that its sessions are the new process's: the near ends
        // connect again, to the new process, and resume them there.
        app.closePairLinks()
        // A signal came after the new process took over: it serves on; this one drains (onSignal).
        if (stopping) return
        stopping = true
        logger.info(
          { newPid: outcome.pid, listeners: outcome.listeners, sessions: outcome.sessions, kept: outcome.kept, heldBytes: outcome.held, ms: outcome.ms, sessionsLeft: app.sessionCount },
          'upgrade done: the new process serves; exiting once the sessions left here end',
        )
        if (outcome.noRoom === true) {
          logger.warn(
            { sessions: app.sessionCount, reason: 'descriptor_limit' },
            'upgrade: sessions stay in this process until they end: the new process has no descriptors free for them (its limit: LimitNOFILE, ulimit -n); none is cut',
          )
        }
        const unmovable = app.unmovableSessions
        if (unmovable > 0) {
          logger.info(
            { sessions: unmovable, relay: 'stream' },
            `upgrade: ${unmovable} session${unmovable === 1 ? '' : 's'} on the stream transport stay in this process until they end: Node streams cannot hand a session over (bytes they hold are in Node's buffers); none is cut`,
          )
        }
        stopThenResolve(UNBOUNDED_GRACE_MS)
      })
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    process.on('SIGHUP', onReload)
    process.on('SIGUSR2', onUpgrade)
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

/**
 * An exception nothing caught. Errors of one session are handled where they arise (the
 * session fails, the others go on); one that gets this far came from anywhere else, and
 * the process's state is unknown: it exits (as HAProxy and Envoy do) so that a supervisor
 * restarts it, rather than relaying on in a state no one can vouch for.
 */
function onFatal(err: unknown, origin: string): void {
  const e = err as Error
  const what = origin === 'unhandledRejection' ? 'unhandled promise rejection' : 'uncaught exception'
  process.stderr.write(`ka-proxy: fatal: ${what}, exiting: ${e?.message ?? String(err)}\n${e?.stack ?? ''}\n`)
  const logger = runningLogger
  if (logger === undefined) process.exit(EXIT_INTERNAL)
  logger.fatal({ err, origin }, `${what}: exiting`)
  // The log is written asynchronously: let the line out, but not wait on it for long.
  setTimeout(() => process.exit(EXIT_INTERNAL), 500)
  logger.flush(() => process.exit(EXIT_INTERNAL))
}

/** The running proxy's logger, for the fatal line (set once the proxy starts). */
let runningLogger: Logger | undefined

export async function main(argv = hideBin(process.argv)): Promise<void> {
  process.on('uncaughtException', onFatal)
  // A command's reader went away (`ka-proxy doctor | head -1`): the output is done, as with
  // SIGPIPE in C tools; nothing is wrong. The proxy's logs have their own destination.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0)
    onFatal(err, 'uncaughtException')
  })
  try {
    process.exitCode = await run(argv)
  } catch (err) {
    process.exitCode = printError(err)
  }
}
