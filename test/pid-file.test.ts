// --pid-file / pidFile: the real command writes its pid once it listens (atomically: no
// temporary file left beside it), removes it on a clean exit, leaves a file that names
// another process alone, and refuses a file it cannot write with one line naming the key.

import t from 'tap'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { echoServer, waitFor } from './helpers/net.ts'
import { runCli, spawnProxy, startCliProxy } from './helpers/cli.ts'

const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-pidfile-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

t.test('--pid-file: written with the pid once listening, removed on SIGTERM', async (t) => {
  const echoPort = await echoServer(t)
  const path = join(dir, 'flag.pid')
  const proxy = await startCliProxy(['--target', `127.0.0.1:${echoPort}`, '--pid-file', path])
  t.teardown(() => void proxy.stop('SIGKILL'))
  // Written right after every route listens (the 'listening' lines come first).
  t.ok(await waitFor(() => existsSync(path), 5000), 'written')
  t.equal(readFileSync(path, 'utf8'), `${proxy.proc.pid}\n`, 'the file holds the pid and a newline')
  t.same(readdirSync(dir).filter((f) => f.startsWith('flag.pid')), ['flag.pid'], 'no temporary file left beside it')
  t.equal(await proxy.stop('SIGTERM'), 0)
  t.notOk(existsSync(path), 'removed on a clean exit')
})

t.test('pidFile: in the config file; a file naming another process is left alone', async (t) => {
  const echoPort = await echoServer(t)
  const path = join(dir, 'config.pid')
  const config = join(dir, 'pid.yaml')
  writeFileSync(config, `pidFile: ${path}\nroutes:\n  - {listen: "127.0.0.1:0", target: "127.0.0.1:${echoPort}"}\n`)
  const proxy = spawnProxy(['--config', config])
  t.teardown(() => void proxy.stop('SIGKILL'))
  await proxy.line((l) => l.msg === 'listening', 30_000)
  t.ok(await waitFor(() => existsSync(path), 5000), 'written')
  t.equal(readFileSync(path, 'utf8'), `${proxy.proc.pid}\n`)
  // What an upgrade does: the process that took over rewrote it.
  writeFileSync(path, '1\n')
  t.equal(await proxy.stop('SIGTERM'), 0)
  t.equal(readFileSync(path, 'utf8'), '1\n', 'not removed: it names another process')
})

t.test('a pid file that cannot be written: one line naming the key, exit 2, nothing left listening', async (t) => {
  const missing = join(dir, 'no-such-dir', 'x.pid')
  const r = runCli(['--listen', '127.0.0.1:0', '--target', '127.0.0.1:9', '--pid-file', missing])
  t.equal(r.status, 2)
  t.equal(r.stderr, `ka-proxy: --pid-file: cannot write ${missing} (ENOENT)\n`)
  const config = join(dir, 'bad-pid.yaml')
  writeFileSync(config, `pidFile: ${missing}\nroutes:\n  - {listen: "127.0.0.1:0", target: "127.0.0.1:9"}\n`)
  const f = runCli(['--config', config])
  t.equal(f.status, 2)
  t.equal(f.stderr, `ka-proxy: ${config}: pidFile: cannot write ${missing} (ENOENT)\n`)
  const empty = join(dir, 'empty-pid.yaml')
  writeFileSync(empty, `pidFile: ""\nroutes:\n  - {listen: "127.0.0.1:0", target: "127.0.0.1:9"}\n`)
  t.match(runCli(['check', '--config', empty]).stderr, `${empty}: pidFile: must not be empty`)
})
