// The upgrade's failure paths with the real command: a broken entry point, one that never
// reports ready, and one speaking an unknown hand-over format leave the old process serving
// (one line says why); SIGUSR2 during an upgrade is ignored; a later one works. And the new
// process's side: a state of a format it does not know is refused, nothing taken.

import t from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect, echoServer, freePort, waitFor } from './helpers/net.ts'
import { entryFile, killAllAtEnd, MAIN, NATIVE, ROOT, roundTrip, start, upgradeTestSetup } from './helpers/upgrade.ts'
import { runCliAsync, spawnProxy } from './helpers/cli.ts'
import { HANDOVER_VERSIONS } from '../src/upgrade.ts'

const { native, dir } = upgradeTestSetup(t, 'upgrade-failure')

t.test('failure is safe: broken entry point, never ready, unknown format; SIGUSR2 during an upgrade is ignored; a later one works', async (t) => {
  const echoPort = await echoServer(t)
  const pidFile = join(dir, 'fail.pid')
  const entry = entryFile(t, dir, 'fail')
  const { proxy, port, since } = await start(t, entry, ['--target', `127.0.0.1:${echoPort}`, '--pid-file', pidFile])
  const oldPid = proxy.proc.pid!
  /** Returns the milliseconds from the start of the attempt to its failure, as logged. */
  const failedAttempt = async (code: string, reason: RegExp, during?: () => Promise<void>): Promise<number> => {
    entry.install(code)
    const mark = proxy.logs.length
    proxy.proc.kill('SIGUSR2')
    const starting = await proxy.line((l) => proxy.logs.indexOf(l) >= mark && l.msg === 'upgrade: starting a new process')
    // A session opened while the upgrade runs stays with the old process and keeps working.
    const s = await connect(port)
    t.teardown(() => s.destroy())
    t.equal(await roundTrip(s, 'during'), 'during')
    await during?.()
    const failed = await proxy.line((l) => proxy.logs.indexOf(l) >= mark && l.msg.startsWith('upgrade failed'), 30_000)
    t.match(String(failed.reason), reason, `one line says why: ${String(failed.reason)}`)
    t.equal(proxy.logs.slice(mark).filter((l) => l.msg.startsWith('upgrade failed')).length, 1, 'one line')
    t.equal(await roundTrip(s, 'after'), 'after', 'the session opened during the attempt still relays')
    s.end()
    const fresh = await connect(port)
    t.equal(await roundTrip(fresh, 'new'), 'new', 'still accepting')
    fresh.end()
    t.equal(readFileSync(pidFile, 'utf8'), `${oldPid}\n`, 'the pid file still names the old process')
    await waitFor(() => proxy.logs.filter((l) => l.msg === 'session closed').length >= 2 * (++attempts), 5000)
    return Number(failed.time) - Number(starting.time)
  }
  let attempts = 0
  await failedAttempt("throw new Error('broken build: entry point throws')\n", /exited with code 1 before it was ready: Error: broken build: entry point throws/)
  const waited = await failedAttempt('setInterval(() => {}, 1000)\n', /did not report ready within 10 s/, async () => {
    const mark = proxy.logs.length
    proxy.proc.kill('SIGUSR2')
    await proxy.line((l) => proxy.logs.indexOf(l) >= mark && l.msg === 'SIGUSR2 ignored: an upgrade is already under way')
  })
  t.ok(waited >= 9900 && waited < 12_000, `gave up ${waited} ms after SIGUSR2`)
  const hello = JSON.stringify({ v: 99, type: 'hello', pid: 0, accepts: [99] })
  await failedAttempt(
    `const { loadNative } = await import(${JSON.stringify(NATIVE)})\nloadNative().binding.sendFds(3, Buffer.from(${JSON.stringify(hello)}), [], 1000)\nsetInterval(() => {}, 1000)\n`,
    new RegExp(`speaks hand-over format 99, this one ${HANDOVER_VERSIONS.join(', ')}: no common version`),
  )
  t.equal(proxy.proc.exitCode, null, 'the old process is still running')
  // The real release back on disk: the next SIGUSR2 upgrades.
  entry.real()
  const mark = proxy.logs.length
  await waitFor(() => proxy.logs.filter((l) => l.msg === 'session closed').length >= 2 * attempts, 5000)
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => proxy.logs.indexOf(l) >= mark && l.msg.startsWith('upgrade done'), 30_000)
  t.equal(await proxy.exited, 0)
  t.equal(readFileSync(pidFile, 'utf8'), `${done.newPid}\n`)
  const s = await connect(port)
  t.equal(await roundTrip(s, 'upgraded'), 'upgraded')
  s.end()
  t.ok(since(mark, 'upgrade: took over the listeners'))
})

t.test('a state of an unknown format is refused by the new process: it binds nothing and says why', async (t) => {
  const [mine, theirs] = native.seqpacketPair()
  t.teardown(() => native.closeFd(mine))
  const port = await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--listen', `127.0.0.1:${port}`, '--target', '127.0.0.1:9', '--log-format', 'json'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe', theirs],
    env: { ...process.env, KA_PROXY_HANDOVER_FD: '3' },
  })
  native.closeFd(theirs)
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => (stderr += c))
  child.stdout!.resume()
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  let hello: { payload: Buffer; fds: number[] } | null = null
  await waitFor(() => {
    try {
      hello = native.recvFds(mine, 65536, 0)
      return true
    } catch {
      return false
    }
  }, 30_000)
  t.match(JSON.parse(hello!.payload.toString()), { v: HANDOVER_VERSIONS[0], type: 'hello', pid: child.pid, accepts: [...HANDOVER_VERSIONS] })
  native.sendFds(mine, Buffer.from(JSON.stringify({ v: 99, type: 'listeners', pid: process.pid, listeners: [] })), [], 1000)
  t.equal(await exited, 1)
  t.equal(stderr, `ka-proxy: upgrade hand-over: format version 99 is not known to this release (it knows ${HANDOVER_VERSIONS.join(', ')}); nothing was taken over\n`)
})

t.test('ka-proxy upgrade (what systemctl reload runs): a config made invalid fails the command with the reason, the old process serves on', async (t) => {
  const echoPort = await echoServer(t)
  const port = await freePort()
  const config = join(dir, 'invalid.yaml')
  const pidFile = join(dir, 'invalid.pid')
  writeFileSync(config, `routes:\n  - {name: r, listen: "127.0.0.1:${port}", target: "127.0.0.1:${echoPort}"}\n`)
  const entry = entryFile(t, dir, 'invalid')
  const proxy = spawnProxy(['--config', config, '--pid-file', pidFile], {}, entry)
  killAllAtEnd(t, proxy)
  await proxy.line((l) => l.msg === 'listening', 30_000)
  const oldPid = proxy.proc.pid!
  const s = await connect(port)
  t.equal(await roundTrip(s, 'before'), 'before')
  writeFileSync(config, `routes:\n  - {name: r, listen: "127.0.0.1:${port}", target: "127.0.0.1:${echoPort}", keepalive: {idle: -5}}\n`)
  const result = await runCliAsync(['upgrade', '--pid-file', pidFile])
  t.equal(result.status, 1, 'the command fails')
  t.equal(result.stdout, '')
  t.match(result.stderr, new RegExp(`^ka-proxy: upgrade failed, pid ${oldPid} still serves: the new process exited with code 2 before it was ready: ka-proxy: .*invalid\\.yaml: routes\\[0\\]\\.keepalive\\.idle: [^\\n]+\\n$`), 'one line: why, with the new process\'s own error')
  t.equal(await roundTrip(s, 'after'), 'after', 'the session goes on in the old process')
  t.equal(proxy.proc.exitCode, null, 'which still runs')
  t.equal(readFileSync(pidFile, 'utf8'), `${oldPid}\n`)
  s.end()
  t.equal(await proxy.stop('SIGTERM'), 0)
})
