// Logs as operators run them: one readable line per event in pretty mode, a log file that
// SIGHUP reopens after logrotate moved it, the config file's `log:` key in force, and
// pino-pretty left unloaded unless asked for.

import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { echoOnce as echo, echoServer, freePort, waitFor } from './helpers/net.ts'
import { runCli, spawnProxy } from './helpers/cli.ts'

const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-logs-'))
const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url))
const LOG = fileURLToPath(new URL('../src/log.ts', import.meta.url))

/** The JSON lines of a log file so far. */
function linesOf(path: string): Array<Record<string, unknown>> {
  if (!existsSync(path)) return []
  return readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
}

t.test('pretty: one line per event, a session is one line', async (t) => {
  const target = await echoServer(t)
  const port = await freePort()
  const proxy = spawnProxy(['--listen', `127.0.0.1:${port}`, '--target', `127.0.0.1:${target}`, '--log-format', 'pretty', '--log-level', 'info'])
  t.teardown(() => proxy.stop('SIGKILL'))
  await proxy.line((l) => l.msg.includes('INFO: listening'), 20_000)
  t.equal(await echo(port, 'pretty'), 'pretty')
  await proxy.line((l) => l.msg.includes('session closed'))
  t.equal(await proxy.stop('SIGTERM'), 0)
  const lines = proxy.logs.map((l) => l.msg)
  t.equal(lines.filter((l) => l.includes('session closed')).length, 1, 'the session: one line')
  t.match(lines.find((l) => l.includes('session closed')), /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: session closed \{.*"reason":"client_end".*"bytesToTarget":6/)
  for (const line of lines) t.match(line, /^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|ERROR|DEBUG): /, 'every line is an event')
})

t.test('--log-file: lines go to the file; SIGHUP reopens it after logrotate moved it', async (t) => {
  const target = await echoServer(t)
  const port = await freePort()
  const file = join(dir, 'ka-proxy.log')
  const proxy = spawnProxy(['--listen', `127.0.0.1:${port}`, '--target', `127.0.0.1:${target}`, '--log-file', file, '--log-level', 'info'])
  t.teardown(() => proxy.stop('SIGKILL'))
  t.ok(await waitFor(() => linesOf(file).some((l) => l.msg === 'listening'), 20_000), 'listening, in the file')
  t.equal(await echo(port, 'one'), 'one')
  t.ok(await waitFor(() => linesOf(file).some((l) => l.msg === 'session closed'), 10_000))
  renameSync(file, `${file}.1`)
  proxy.proc.kill('SIGHUP')
  t.ok(await waitFor(() => linesOf(file).some((l) => /log file reopened/.test(String(l.msg))), 10_000), 'a new file after SIGHUP')
  t.equal(await echo(port, 'two'), 'two')
  t.ok(await waitFor(() => linesOf(file).some((l) => l.msg === 'session closed'), 10_000))
  t.equal(await proxy.stop('SIGTERM'), 0)
  const rotated = linesOf(`${file}.1`).filter((l) => l.msg === 'session closed')
  const current = linesOf(file).filter((l) => l.msg === 'session closed')
  t.same(rotated.map((l) => l.bytesToTarget), [3], 'the first session in the rotated file')
  t.same(current.map((l) => l.bytesToTarget), [3], 'the second in the new one')
  t.not(rotated[0]!.session, current[0]!.session)
  t.ok(linesOf(file).some((l) => l.msg === 'stopped'), 'flushed at exit')
  t.equal(proxy.logs.length, 0, 'nothing on stdout')
})

t.test('the config file\'s log: key is in force (level, format, file)', async (t) => {
  const file = join(dir, 'from-config.log')
  const config = join(dir, 'log.yaml')
  writeFileSync(config, `log: {level: warn, format: json, file: ${file}}\nroutes:\n  - {listen: 127.0.0.1:0, target: "127.0.0.1:1"}\n`)
  // --no-native: a warning to log. No --log-* flag, so the file decides.
  const proc = spawn(process.execPath, ['--import', 'tsx', MAIN, '--config', config, '--no-native'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  const exited = new Promise((r) => proc.once('exit', r))
  t.teardown(() => proc.kill('SIGKILL'))
  t.ok(await waitFor(() => linesOf(file).length > 0, 20_000), 'lines in the file named by log.file')
  // Give the info lines (listening) time to show up if the level were ignored.
  await new Promise((r) => setTimeout(r, 1000))
  proc.kill('SIGTERM')
  await exited
  const lines = linesOf(file)
  t.match(lines[0], { level: 40, msg: /native socket helper: NOT in use \(disabled by --no-native\)/ }, 'JSON, the warning')
  t.equal(lines.filter((l) => (l.level as number) < 40).length, 0, 'level warn: no info lines')
  t.equal(stdout, '', 'nothing on stdout')
})

t.test('a log file that cannot be opened: one line naming the flag or key, exit 2', async (t) => {
  const flag = runCli(['--listen', '0', '--target', 'a:1', '--log-file', '/nonexistent-dir/ka.log'])
  t.equal(flag.status, 2)
  t.equal(flag.stderr, 'ka-proxy: --log-file: cannot append to /nonexistent-dir/ka.log (ENOENT)\n')
  const config = join(dir, 'bad-log.yaml')
  writeFileSync(config, 'log: {file: /nonexistent-dir/ka.log}\nroutes:\n  - {listen: 0, target: "a:1"}\n')
  const check = runCli(['check', '--config', config])
  t.equal(check.status, 2)
  t.equal(check.stderr, `ka-proxy: ${config}: log.file: cannot append to /nonexistent-dir/ka.log (ENOENT)\n`)
})

t.test('pino-pretty is not loaded unless pretty output is asked for', async (t) => {
  // NODE_DEBUG=module names every CommonJS module loaded; pino-pretty is one.
  const r = runCli(['check', '--listen', '0', '--target', 'a:1', '--log-format', 'json'], { NODE_DEBUG: 'module' })
  t.equal(r.status, 0)
  t.match(r.stderr, /MODULE \d+: load /, 'module loads are traced')
  t.notMatch(r.stderr, /pino-pretty/, 'pino-pretty: not loaded')
})

t.test('without the native helper, keepalive settings it cannot apply are named in the warning', async (t) => {
  const config = join(dir, 'fallback.yaml')
  writeFileSync(config, 'routes:\n  - {listen: 127.0.0.1:0, target: "127.0.0.1:1", keepalive: {idle: 30, count: 4}, targetKeepalive: {userTimeout: 20}}\n')
  const proxy = spawnProxy(['--config', config, '--no-native', '--interval', '5'])
  t.teardown(() => proxy.stop('SIGKILL'))
  await proxy.line((l) => l.msg === 'listening', 20_000)
  const warnings = proxy.logs.filter((l) => l.level === 40)
  t.equal(warnings.length, 1, 'one warning')
  const ignored = ['--interval', `${config}: routes[0].keepalive.count`, `${config}: routes[0].targetKeepalive.userTimeout`]
  t.same(warnings[0]!.ignored, ignored)
  t.match(warnings[0]!.msg, `falling back to setKeepAlive: interval 1 s, count 10, no TCP_USER_TIMEOUT; these settings are NOT applied: ${ignored.join(', ')}`)
})

t.test('lines written in one turn go out together, in order, and none is lost when the process exits in that turn or after logger.flush', async (t) => {
  for (const ending of ['process.exit(0)', 'logger.flush(() => process.exit(0))', 'setImmediate(() => process.exit(0))']) {
    const file = join(dir, `turn-${Math.random().toString(36).slice(2)}.log`)
    // 2,000 lines of one turn (a close storm's worth), then the ending, in the same turn.
    const script = `import { createLogger } from ${JSON.stringify(LOG)}
const { logger } = await createLogger({ level: 'info', format: 'json', file: ${JSON.stringify(file)} })
// The file is opened asynchronously: a proxy logs its sessions' lines long after.
await new Promise((resolve) => setTimeout(resolve, 300))
for (let i = 0; i < 2000; i++) logger.info({ n: i }, 'session closed')
${ending}`
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 })
    t.equal(r.status, 0, `${ending}: exit 0 ${r.stderr}`)
    const ns = linesOf(file).map((l) => l.n)
    t.equal(ns.length, 2000, `${ending}: every line is in the file`)
    t.ok(ns.every((n, i) => n === i), `${ending}: in order`)
  }
})
