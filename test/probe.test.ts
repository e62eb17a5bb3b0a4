// `ka-proxy probe` without a lab: bad input is one line with exit 2, an unreachable target
// exit 3; the idle times it staggers; the settings it recommends; a short run on loopback
// against probe-server and against a real Redis.

import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { runCli } from './helpers/cli.ts'
import { freePort } from './helpers/net.ts'
import { redisMissing, startRedis } from './helpers/redis.ts'
import { splitInterval, staggerIdle } from '../src/probe/schedule.ts'
import { recommend } from '../src/probe/report.ts'
import { parseDuration } from '../src/probe/command.ts'
import { startProbeServer } from '../src/probe/server.ts'
import { detectionBound } from '../src/keepalive/settings.ts'

const noRedis = redisMissing()
if (noRedis !== null && process.env.CI === 'true') t.fail(`CI=true and a prerequisite is missing: ${noRedis}`)

const BAD_INPUT: Array<[string, string[], number, RegExp]> = [
  ['unknown check', ['probe', '--target', '127.0.0.1:7000', '--check', 'smtp'], 2, /^ka-proxy: --check: must be one of "echo", "redis", "send", "pg" \(got "smtp"\)\n$/],
  ['--max below the resolution', ['probe', '--target', '127.0.0.1:7000', '--max', '1', '--resolution', '2s'], 2, /^ka-proxy: --max: must be at least the resolution, 2 s \(got 1 s\)\n$/],
  ['--max not a duration', ['probe', '--target', '127.0.0.1:7000', '--max', 'soon'], 2, /^ka-proxy: --max: expected a duration/],
  ['missing --target', ['probe'], 2, /^ka-proxy: .*target/],
  ['--connections 2', ['probe', '--target', '127.0.0.1:7000', '--connections', '2'], 2, /^ka-proxy: --connections: must be a whole number from 4 to 1024/],
  ['--check send without --send', ['probe', '--target', '127.0.0.1:7000', '--check', 'send'], 2, /^ka-proxy: --send: needed with --check send/],
  ['--dsn with another check', ['probe', '--target', '127.0.0.1:7000', '--dsn', 'postgres://u@h/d'], 2, /^ka-proxy: --dsn: only with --check pg\n$/],
  ['--dsn not a URL', ['probe', '--target', '127.0.0.1:7000', '--check', 'pg', '--dsn', 'host=db'], 2, /^ka-proxy: --dsn: expected postgres:\/\//],
  ['unknown flag', ['probe', '--target', '127.0.0.1:7000', '--idle', '5'], 2, /^ka-proxy: --idle: unknown option/],
  ['probe-server bad port', ['probe-server', '--listen', '99999'], 2, /^ka-proxy: --listen: port must be a number from 0 to 65535/],
]

t.test('bad input: one line naming the flag, exit 2', async (t) => {
  for (const [name, args, code, message] of BAD_INPUT) {
    const r = runCli(args)
    t.equal(r.status, code, `${name}: exit ${code}`)
    t.match(r.stderr, message, `${name}: ${r.stderr.trim()}`)
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`)
    t.equal(r.stdout, '', `${name}: nothing on stdout`)
  }
})

t.test('unreachable target: exit 3, one line naming it', async (t) => {
  const port = await freePort()
  const r = runCli(['probe', '--target', `127.0.0.1:${port}`, '--max', '4'])
  t.equal(r.status, 3)
  t.match(r.stderr, new RegExp(`^ka-proxy: --target: 127\\.0\\.0\\.1:${port}: no echo answer \\(.*ECONNREFUSED.*\\)\\n$`))
  t.equal(r.stdout, '')
})

t.test('durations', async (t) => {
  t.equal(parseDuration('90', '--max'), 90)
  t.equal(parseDuration('90s', '--max'), 90)
  t.equal(parseDuration('20m', '--max'), 1200)
  t.equal(parseDuration('1h30m', '--max'), 5400)
  t.equal(parseDuration('1.5h', '--max'), 5400)
  t.throws(() => parseDuration('2d', '--max'), /--max: expected a duration/)
  t.throws(() => parseDuration('0', '--max'), /--max: must be longer than 0/)
})

t.test('staggered idle times', async (t) => {
  const wide = staggerIdle(0, 3600, 16)
  t.equal(wide.length, 16)
  t.equal(wide[15], 3600, 'the last one is the maximum')
  t.ok(wide.every((x, i) => i === 0 || x > wide[i - 1]!), 'increasing')
  const ratios = wide.slice(1).map((x, i) => x / wide[i]!)
  t.ok(Math.max(...ratios) - Math.min(...ratios) < 0.05, `geometric over a wide range (ratios ${Math.min(...ratios).toFixed(3)}..${Math.max(...ratios).toFixed(3)})`)
  t.ok(Math.max(...ratios) < 1.6, 'each step at most 60 % longer than the last: any timeout is bracketed within that')
  t.ok(wide[0]! >= 1 && wide[0]! < 10, `starts at a few seconds (${wide[0]})`)
  t.same(staggerIdle(0, 16, 16, { first: 1 }).slice(0, 3), [1, 1.2, 1.45], 'first point as asked')
  t.same(staggerIdle(10, 15, 5), [11, 12, 13, 14, 15], 'evenly over a narrow range')
  t.same(staggerIdle(0, 45, 5, { spacing: 'even' }), [9, 18, 27, 36, 45], 'evenly over (0, max] when asked (the survival curve)')
  t.equal(staggerIdle(0, 5, 100, { spacing: 'even' }).length, 100, 'as many as asked, even when dense')
  t.same(splitInterval(7.6, 9.2, 3), [8, 8.4, 8.8], 'strictly inside a bracket')
  t.same(splitInterval(7.6, 7.61, 5), [], 'nothing left to split')
  t.throws(() => staggerIdle(5, 5, 3), RangeError)
})

t.test('recommended settings stay well under the timeout; a profile when one fits', async (t) => {
  const short = recommend(7.6)
  t.same([short.idle, short.interval, short.count, short.profile], [3, 1, 5, undefined], 'T = 8 s: derived values')
  t.ok(short.idle + short.interval <= 0.6 * 7.6)
  t.equal(short.deadAfter, detectionBound(short))
  t.equal(recommend(350).profile, 'aggressive-nat', 'AWS NAT gateway (350 s): the default profile')
  t.equal(recommend(1200).profile, 'database', 'GCP Cloud NAT (20 min): the database profile')
  for (const safe of [5, 30, 100, 240, 350, 1200, 7200]) {
    const r = recommend(safe)
    t.ok(r.idle + r.interval <= 0.6 * safe, `${safe} s: idle ${r.idle} + interval ${r.interval} well under it`)
  }
  t.ok(recommend(1.5).tight, 'a timeout too short for whole-second keepalive is flagged')
})

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url))

/** runCli without blocking this process: the responder under test lives in it. */
function runCliAsync(args: string[]): Promise<{ status: number | null, stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', MAIN, ...args], { encoding: 'utf8' }, (err, stdout) => {
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout })
    })
  })
}

t.test('on loopback: nothing dies up to --max against probe-server (exit 1, report)', async (t) => {
  const responder = await startProbeServer({ host: '127.0.0.1', port: 0 })
  t.teardown(() => responder.close())
  const { port } = responder.server.address() as { port: number }
  const r = await runCliAsync(['probe', '--target', `127.0.0.1:${port}`, '--max', '3', '--resolution', '1'])
  t.equal(r.status, 1, 'exit 1: nothing died')
  t.match(r.stdout, /Idle timeout of the path: none found: nothing on the path dropped a connection idle up to 3 s\./)
  t.match(r.stdout, new RegExp(`\\n  ka-proxy --listen 127\\.0\\.0\\.1:\\d+ --target 127\\.0\\.0\\.1:${port} --idle \\d+ --interval \\d+ --count \\d+\\n$`), 'ends with a ready command line')
})

t.test('redis: PING after the idle time', { skip: noRedis ?? false }, async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const r = runCli(['probe', '--target', `127.0.0.1:${redis.port}`, '--check', 'redis', '--max', '3', '--resolution', '1', '--json'])
  t.equal(r.status, 1, r.stderr)
  const json = JSON.parse(r.stdout) as { check: string, samples: Array<{ alive: boolean }> }
  t.equal(json.check, 'redis')
  t.ok(json.samples.length > 4 && json.samples.every((s) => s.alive), 'every sample answered PONG')
})

t.test('Ctrl-C: the figures so far, then exit 130', async (t) => {
  const responder = await startProbeServer({ host: '127.0.0.1', port: 0 })
  t.teardown(() => responder.close())
  const { port } = responder.server.address() as { port: number }
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'probe', '--target', `127.0.0.1:${port}`, '--max', '60', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  // Once the sweep's connections are open, a few seconds give it its first verdicts.
  const open = (): Promise<number> => new Promise((resolve) => responder.server.getConnections((_e, n) => resolve(n)))
  while (await open() < 16) await new Promise((r) => setTimeout(r, 100))
  await new Promise((r) => setTimeout(r, 4000))
  child.kill('SIGINT')
  const [code] = await once(child, 'exit') as [number | null]
  t.equal(code, 130)
  const json = JSON.parse(stdout) as { samples: Array<{ alive: boolean }>, notes: string[] }
  t.ok(json.samples.length >= 1 && json.samples.every((s) => s.alive), `the samples judged so far (${json.samples.length})`)
  t.match(json.notes.join(' '), /interrupted \(SIGINT\)/)
})

t.test('on a terminal: a live progress line on stderr', { skip: process.platform === 'linux' ? false : 'needs script(1) from util-linux' }, async (t) => {
  const responder = await startProbeServer({ host: '127.0.0.1', port: 0 })
  t.teardown(() => responder.close())
  const { port } = responder.server.address() as { port: number }
  // script(1) gives the command a pseudo-terminal, as a user's shell would.
  const command = `${process.execPath} --import tsx ${MAIN} probe --target 127.0.0.1:${port} --max 3 --resolution 1`
  const r = await new Promise<string>((resolve) => {
    execFile('script', ['-qec', command, '/dev/null'], { encoding: 'utf8' }, (_err, stdout) => resolve(stdout))
  })
  t.match(r, /\r\x1b\[Kprobe: sweep {2}0:0\d of ~0:0\d {2}alive \d+ {2}dead 0 {2}pending \d+/, 'phase, elapsed of expected, alive, dead, pending')
  t.match(r, /Idle timeout of the path: none found/, 'then the report')
})

t.test('redis with its own timeout: the server\'s close is reported as such', { skip: noRedis ?? false }, async (t) => {
  const redis = await startRedis(['--timeout', '3'])
  t.teardown(() => redis.stop())
  const r = await runCliAsync(['probe', '--target', `127.0.0.1:${redis.port}`, '--check', 'redis', '--max', '8', '--resolution', '1', '--reply-timeout', '2', '--json'])
  const json = JSON.parse(r.stdout) as { idleTimeout: unknown, serverClosedAfter: number | null, samples: Array<{ idle: number, alive: boolean, byServer: boolean }> }
  t.comment(`serverClosedAfter ${json.serverClosedAfter}`)
  t.equal(r.status, 0)
  t.equal(json.idleTimeout, null, 'not blamed on the path')
  t.ok(json.serverClosedAfter !== null && json.serverClosedAfter >= 2.5 && json.serverClosedAfter <= 5, `closed by the server after ${json.serverClosedAfter} s (timeout 3)`)
  t.ok(json.samples.some((s) => s.alive && s.idle < 3), 'shorter idles alive')
})
