// The upgrade (SIGUSR2) with the real command: the new process is started from the entry point
// on disk, takes the listening sockets (route and admin API) and serves; a connect loop running
// through it sees no refusal and no reset; the pid file names the new process. Failure is safe:
// a broken entry point, one that never reports ready, and one speaking an unknown hand-over
// format leave the old process serving; SIGUSR2 during an upgrade is ignored; a later one works.
// While sessions are open, and without the native helper, SIGUSR2 changes nothing.

import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import type { Socket } from 'node:net'
import { request } from 'undici'
import { connect, echoServer, freePort, sleep, waitFor } from './helpers/net.ts'
import { spawnProxy, type Entry, type RunningProxy } from './helpers/cli.ts'
import type { LogLine } from './helpers/proxy.ts'
import { loadNative } from '../src/native.ts'

const load = loadNative()
if (!load.ok) throw new Error(`native helper must be built for these tests: ${load.reason}`)
const native = load.binding

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const MAIN = join(ROOT, 'src/main.ts')
const NATIVE = join(ROOT, 'src/native.ts')
const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-upgrade-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** An entry point of our own, so a test can put another "release" on disk before SIGUSR2. */
function entryFile(t: Test, name: string): Entry & { install(code: string): void; real(): void } {
  const main = join(dir, `${name}.mjs`)
  const install = (code: string): void => writeFileSync(main, code)
  const real = (): void => install(`await import(${JSON.stringify(MAIN)})\n`)
  real()
  t.teardown(() => rmSync(main, { force: true }))
  return { main, cwd: ROOT, install, real }
}

interface Started {
  proxy: RunningProxy
  port: number
  /** Log lines after the `from`-th. */
  since(from: number, msg: string): LogLine | undefined
}

async function start(t: Test, entry: Entry, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Started> {
  const port = await freePort()
  const proxy = spawnProxy(['--listen', `127.0.0.1:${port}`, ...args], env, entry)
  // Every process an upgrade started writes to the same stdout: kill whichever is left.
  t.teardown(() => {
    for (const pid of new Set(proxy.logs.map((l) => l.pid))) {
      try {
        if (typeof pid === 'number') process.kill(pid, 'SIGKILL')
      } catch {
        // exited already
      }
    }
  })
  await proxy.line((l) => l.msg === 'listening', 30_000)
  const since = (from: number, msg: string): LogLine | undefined => proxy.logs.slice(from).find((l) => l.msg.startsWith(msg))
  return { proxy, port, since }
}

async function roundTrip(s: Socket, text: string): Promise<string> {
  s.write(text)
  const [data] = (await once(s, 'data')) as [Buffer]
  return String(data)
}

/**
 * Connects, sends, reads the echo, closes; over and over until `stop`, from `n` clients at once,
 * with a short pause between round trips (the new process must start on a busy 2-core machine).
 */
async function connectLoop(port: number, n: number, stop: () => boolean): Promise<{ ok: number; errors: string[] }> {
  const out = { ok: 0, errors: [] as string[] }
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      for (let k = 0; !stop(); k++) {
        try {
          const s = await connect(port)
          const text = `c${i}-${k}`
          const got = await roundTrip(s, text)
          if (got !== text) out.errors.push(`echo ${JSON.stringify(got)} for ${text}`)
          else out.ok++
          s.end()
          await once(s, 'close')
        } catch (err) {
          out.errors.push((err as NodeJS.ErrnoException).code ?? String(err))
        }
        await sleep(5)
      }
    }),
  )
  return out
}

const healthy = async (port: number): Promise<boolean> => {
  const res = await request(`http://127.0.0.1:${port}/healthz`)
  await res.body.dump()
  return res.statusCode === 200
}

t.test('the new process takes the listeners; a connect loop through the upgrade sees no refusal or reset', async (t) => {
  const echoPort = await echoServer(t)
  const adminPort = await freePort()
  const pidFile = join(dir, 'upgrade.pid')
  const entry = entryFile(t, 'loop')
  const { proxy, port, since } = await start(t, entry, ['--target', `127.0.0.1:${echoPort}`, '--admin', `127.0.0.1:${adminPort}`, '--pid-file', pidFile])
  const oldPid = proxy.proc.pid!
  t.ok(await waitFor(() => existsSync(pidFile), 5000))
  let stop = false
  let loop: Promise<{ ok: number; errors: string[] }> | undefined
  const mark = proxy.logs.length
  proxy.proc.kill('SIGUSR2')
  // The loop starts once the upgrade has (no session may be open at SIGUSR2: see the refusal test).
  await proxy.line((l) => proxy.logs.indexOf(l) >= mark && l.msg === 'upgrade: starting a new process')
  loop = connectLoop(port, 2, () => stop)
  const done = await proxy.line((l) => l.msg.startsWith('upgrade done'), 30_000)
  const newPid = Number(done.newPid)
  t.not(newPid, oldPid)
  t.equal(done.listeners, 2, 'the route and the admin API handed over')
  t.equal(await proxy.exited, 0, 'the old process exits cleanly')
  await sleep(500)
  stop = true
  const result = await loop
  t.same(result.errors, [], 'no refusal, no reset, no wrong byte')
  t.ok(result.ok > 20, `${result.ok} round trips through the upgrade`)
  const took = since(mark, 'upgrade: took over the listeners')
  t.equal(took?.pid, newPid)
  t.equal(took?.from, oldPid)
  const listening = proxy.logs.slice(mark).filter((l) => l.msg === 'listening')
  t.same(listening.map((l) => [l.pid, l.handedOver]), [[newPid, true]], 'the route listens on the socket handed over, not a new one')
  const closedBy = new Set(proxy.logs.slice(mark).filter((l) => l.msg === 'session closed').map((l) => l.pid))
  t.ok(closedBy.has(newPid), 'the new process served sessions of the loop')
  t.equal(readFileSync(pidFile, 'utf8'), `${newPid}\n`, 'the pid file names the new process')
  t.ok(await healthy(adminPort), 'the admin API answers from the new process')
  t.ok(alive(newPid))
  process.kill(newPid, 'SIGTERM')
  t.ok(await waitFor(() => !alive(newPid), 10_000), 'the new process stops on SIGTERM')
  t.notOk(existsSync(pidFile), 'and removes the pid file it wrote')
})

t.test('failure is safe: broken entry point, never ready, unknown format; SIGUSR2 during an upgrade is ignored; a later one works', async (t) => {
  const echoPort = await echoServer(t)
  const pidFile = join(dir, 'fail.pid')
  const entry = entryFile(t, 'fail')
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
  const hello = JSON.stringify({ v: 2, type: 'hello', pid: 0, accepts: [2] })
  await failedAttempt(
    `const { loadNative } = await import(${JSON.stringify(NATIVE)})\nloadNative().binding.sendFds(3, Buffer.from(${JSON.stringify(hello)}), [], 1000)\nsetInterval(() => {}, 1000)\n`,
    /speaks hand-over format 2, this one 1: no common version/,
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
  t.match(JSON.parse(hello!.payload.toString()), { v: 1, type: 'hello', pid: child.pid, accepts: [1] })
  native.sendFds(mine, Buffer.from(JSON.stringify({ v: 99, type: 'listeners', pid: process.pid, listeners: [] })), [], 1000)
  t.equal(await exited, 1)
  t.equal(stderr, 'ka-proxy: upgrade hand-over: format version 99 is not known to this release (it knows 1); nothing was taken over\n')
})

t.test('SIGUSR2 changes nothing while sessions are open, and without the native helper', async (t) => {
  const echoPort = await echoServer(t)
  for (const extra of [[], ['--no-native']]) {
    const entry = entryFile(t, `refuse${extra.length}`)
    const { proxy, port } = await start(t, entry, ['--target', `127.0.0.1:${echoPort}`, ...extra])
    const s = await connect(port)
    t.equal(await roundTrip(s, 'a'), 'a')
    const mark = proxy.logs.length
    proxy.proc.kill('SIGUSR2')
    const line = await proxy.line((l) => proxy.logs.indexOf(l) >= mark && l.msg.startsWith('SIGUSR2'))
    t.equal(line.msg, extra.length === 0
      ? 'SIGUSR2 refused: sessions are open and this release hands over only listeners; nothing changed'
      : 'SIGUSR2 ignored: the upgrade needs the native helper (descriptor passing); nothing changed')
    await sleep(300)
    t.equal(await roundTrip(s, 'b'), 'b', 'the session goes on')
    t.notOk(proxy.logs.slice(mark).some((l) => l.msg.startsWith('upgrade')), 'no upgrade started')
    s.end()
    t.equal(await proxy.stop('SIGTERM'), 0)
  }
})

t.test('target health carries over: a target down before the upgrade is not tried, logged or failed over again', async (t) => {
  const echoPort = await echoServer(t)
  const downPort = await freePort()
  const entry = entryFile(t, 'health')
  const hb = ['--heartbeat', 'tcp', '--heartbeat-interval', '200ms', '--heartbeat-timeout', '100ms', '--heartbeat-fall', '2', '--heartbeat-rise', '2']
  const { proxy, port } = await start(t, entry, ['--target', `127.0.0.1:${downPort},127.0.0.1:${echoPort}`, ...hb])
  await proxy.line((l) => l.msg === 'target down')
  const s = await connect(port)
  t.equal(await roundTrip(s, 'before'), 'before')
  s.end()
  await proxy.line((l) => l.msg === 'session closed')
  const mark = proxy.logs.length
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => proxy.logs.indexOf(l) >= mark && l.msg.startsWith('upgrade done'), 30_000)
  const newPid = Number(done.newPid)
  const after = await connect(port)
  t.equal(await roundTrip(after, 'after'), 'after')
  after.end()
  const closed = await proxy.line((l) => l.pid === newPid && l.msg === 'session closed')
  t.equal(closed.target, `127.0.0.1:${echoPort}`, 'the new process sends new connections where the old one did')
  t.equal(closed.reason, 'client_end', 'at once: no failed connect to the down target first')
  await sleep(1500) // several check intervals
  const fromNew = proxy.logs.filter((l) => l.pid === newPid && /^(target (down|up)|failover)/.test(l.msg))
  t.same(fromNew.map((l) => l.msg), [], 'no state change and no failover in the new process')
})
