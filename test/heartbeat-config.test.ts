// Heartbeat settings: defaults, the object a config file's route will carry, and bad
// input as a one-line error naming the flag (exit code 2) or the config key.

import t from 'tap'
import { decodeBytes, describeHeartbeat, HEARTBEAT_DEFAULTS, resolveHeartbeat, type HeartbeatInput } from '../src/config/heartbeat.ts'
import { rawOptionsOf, resolveOptions, type RawOptions } from '../src/config/options.ts'
import { ConfigError } from '../src/errors.ts'
import { runCli } from './helpers/cli.ts'
import { run } from '../src/cli.ts'

const BASE = ['--listen', '15432', '--target', '127.0.0.1:5432']

t.test('defaults, and the same object as a config file route carries', async (t) => {
  const o = resolveOptions({ listen: '0', target: 'a:1,b:2', heartbeat: { type: 'pg' } })
  t.same(o.targets, [{ host: 'a', port: 1 }, { host: 'b', port: 2 }])
  t.equal(o.balance, 'first')
  t.same(o.heartbeat, { check: { type: 'pg' }, interval: 2, timeout: 1, fall: 3, rise: 2, onDown: 'kill' })
  t.same(HEARTBEAT_DEFAULTS, { interval: 2, timeout: 1, fall: 3, rise: 2, onDown: 'kill' }, 'documented in README')
  t.equal(describeHeartbeat(o.heartbeat!), 'pg every 2 s, timeout 1 s, down after 3 failed, up after 2 good, on-down kill (a dead target is known within 7 s)')
  t.equal(resolveOptions({ listen: '0', target: 'a:1' }).heartbeat, undefined, 'off unless asked for')
  t.equal(resolveHeartbeat({ type: 'tcp', interval: 0.5 }, String)!.timeout, 0.5, 'the default timeout never exceeds the interval')
  // A config file names the key path instead of the flag.
  const fromFile: HeartbeatInput = { type: 'redis', interval: 1, timeout: 2 }
  t.throws(() => resolveHeartbeat(fromFile, (k) => `routes.cache.heartbeat.${k}`), {
    message: 'routes.cache.heartbeat.timeout: must not be longer than the interval (1 s): checks of a target never overlap',
  })
  const inFile = (k?: string): string => (k ? `routes[1].heartbeat.${k}` : 'routes[1].heartbeat')
  t.throws(() => resolveHeartbeat({ type: 'tcp', fall: '3' }, inFile), { message: 'routes[1].heartbeat.fall: must be a whole number from 1 to 100 (got 3)' })
  t.throws(() => resolveHeartbeat({ type: 'tcp', intervall: 1 }, inFile), { message: 'routes[1].heartbeat.intervall: unknown key' })
  t.throws(() => resolveHeartbeat('pg', inFile), { message: 'routes[1].heartbeat: expected a mapping with at least "type" (got "pg")' })
  t.throws(() => resolveHeartbeat({ type: 'pg', onDown: 'kil' }, inFile), { message: 'routes[1].heartbeat.onDown: must be one of kill, drain, keep (got kil)' })
  t.equal(resolveHeartbeat(undefined, inFile), undefined)
  t.same(resolveHeartbeat({ type: 'http://{host}:8008/primary' }, String)!.check, { type: 'http', url: 'http://{host}:8008/primary' })
  t.same(resolveHeartbeat({ type: 'send', expect: 'OK' }, String)!.check, { type: 'send', send: Buffer.alloc(0), expect: Buffer.from('OK') })
})

t.test('a resolved route written back as its config would (an upgrade hands a removed route over so) resolves to the same options', async (t) => {
  const routes: RawOptions[] = [
    { name: 'a', listen: '15432', target: 'db1:5432,[::1]:5433', heartbeat: { type: 'send', send: 'PING\\r\\n\\x00\\xff', expect: '+PONG', interval: 0.5, fall: 4, rise: 1, onDown: 'drain' }, balance: 'roundrobin' },
    { name: 'b', listen: '[::1]:0', target: '127.0.0.1:5432', heartbeat: { type: 'http://{host}:8008/primary', timeout: 0.2 }, failback: 'auto', keepalive: { shared: { profile: 'aggressive-nat' }, client: { idle: 300, userTimeout: 0 } } },
    { name: 'c', listen: '127.0.0.1:6000', target: 'x:1', heartbeat: { type: 'send', expect: 'OK' }, connectTimeout: '1500ms', halfCloseTimeout: 5, flushTimeout: 2, shutdownGrace: 0, maxConnections: 10, backlog: 64, native: false },
    { listen: '7000', target: 'y:2' },
  ]
  for (const raw of routes) {
    const o = resolveOptions(raw)
    t.same(resolveOptions(rawOptionsOf(o)), o, `route ${o.name}`)
  }
})

t.test('escapes in send/expect', async (t) => {
  t.same(decodeBytes('PING\\r\\n', 'k'), Buffer.from('PING\r\n'))
  t.same(decodeBytes('\\x00\\xFFa\\\\b\\t\\0', 'k'), Buffer.from([0, 255, 97, 92, 98, 9, 0]))
  t.same(decodeBytes('é', 'k'), Buffer.from('é', 'utf8'))
  t.throws(() => decodeBytes('a\\q', '--heartbeat-send'), new ConfigError('--heartbeat-send', 'unknown escape "\\q" (use \\r \\n \\t \\0 \\\\ or \\xHH)'))
  t.throws(() => decodeBytes('\\x4', 'k'), { message: /unknown escape "\\x"/ })
})

const BAD_INPUT: Array<[string, string[], RegExp]> = [
  ['unknown check', ['--heartbeat', 'mysql'], /^--heartbeat: must be tcp, pg, redis, send or an http\(s\):\/\/ URL \(got "mysql"\)$/],
  ['bad URL', ['--heartbeat', 'http://exa mple:80/'], /^--heartbeat: not a valid URL: http:\/\/exa mple:80\/$/],
  ['interval without heartbeat', ['--heartbeat-interval', '1'], /^--heartbeat-interval: has no effect without --heartbeat \(the check to run\)$/],
  ['on-down without heartbeat', ['--on-down', 'drain'], /^--on-down: has no effect without --heartbeat/],
  ['interval 0', ['--heartbeat', 'tcp', '--heartbeat-interval', '0'], /^--heartbeat-interval: must be a number of seconds from 0.01 to 3600 \(got 0\)$/],
  ['interval not a number', ['--heartbeat', 'tcp', '--heartbeat-interval', 'often'], /^--heartbeat-interval: must be a number of seconds, or a duration such as 1500ms, 30s, 5m, 1h \(got "often"\)$/],
  ['timeout over interval', ['--heartbeat', 'pg', '--heartbeat-interval', '1', '--heartbeat-timeout', '1.5'], /^--heartbeat-timeout: must not be longer than the interval \(1 s\)/],
  ['fall 0', ['--heartbeat', 'pg', '--heartbeat-fall', '0'], /^--heartbeat-fall: must be a whole number from 1 to 100 \(got 0\)$/],
  ['rise 1.5', ['--heartbeat', 'pg', '--heartbeat-rise', '1.5'], /^--heartbeat-rise: must be a whole number from 1 to 100 \(got 1.5\)$/],
  ['on-down bad', ['--heartbeat', 'pg', '--on-down', 'explode'], /^--on-down: must be one of kill, drain, keep \(got explode\)$/],
  ['send without expect', ['--heartbeat', 'send', '--heartbeat-send', 'PING'], /^--heartbeat-expect: is required with --heartbeat send/],
  ['expect with pg', ['--heartbeat', 'pg', '--heartbeat-expect', 'OK'], /^--heartbeat-expect: only goes with --heartbeat send$/],
  ['empty expect', ['--heartbeat', 'send', '--heartbeat-expect', ''], /^--heartbeat-expect: (must not be empty|needs a value)$/],
  ['bad escape', ['--heartbeat', 'send', '--heartbeat-expect', 'a\\z'], /^--heartbeat-expect: unknown escape "\\z"/],
  ['balance bad', ['--balance', 'random'], /^--balance: must be one of first, roundrobin \(got random\)$/],
]

const LISTS: Array<[string, string[], RegExp]> = [
  ['empty list entry', ['--listen', '15432', '--target', 'a:1,,b:2'], /^--target: empty entry in the list "a:1,,b:2"$/],
  ['target twice', ['--listen', '15432', '--target', 'a:1,a:1'], /^--target: a:1 is listed twice$/],
  ['bad second target', ['--listen', '15432', '--target', 'a:1,b'], /^--target: expected host:port \(got "b"\)$/],
]

t.test('bad heartbeat and target flags: a ConfigError naming the flag (exit code 2)', async (t) => {
  // In process, through the CLI's own parser and option mapping: fast enough for every row.
  for (const [name, args, message] of [...BAD_INPUT.map(([n, a, m]): [string, string[], RegExp] => [n, [...BASE, ...a], m]), ...LISTS]) {
    const err = await run(args).then(() => undefined, (e: unknown) => e)
    t.type(err, ConfigError, `${name}: a ConfigError`)
    t.equal((err as ConfigError).exitCode, 2, `${name}: exit code 2`)
    t.match((err as ConfigError).message, message, `${name}: message`)
  }
})

t.test('the real command: one line on stderr, exit code 2', async (t) => {
  for (const [name, args, message] of [BAD_INPUT[5]!, BAD_INPUT[9]!]) {
    const r = runCli([...BASE, ...args])
    t.equal(r.status, 2, `${name}: exit code 2`)
    t.match(r.stderr.trimEnd(), new RegExp(`^ka-proxy: ${message.source.slice(1)}`), `${name}: message`)
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`)
  }
})
