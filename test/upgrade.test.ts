// The upgrade (SIGUSR2) with the real command: the new process is started from the entry point
// on disk, takes the listening sockets (route and admin API) and serves; a connect loop running
// through it sees no refusal and no reset; the pid file names the new process; target health and
// the config file (read again) carry over. Without the native helper, SIGUSR2 changes nothing.
// Established sessions moving are in upgrade-sessions.test.ts, the failure paths in
// upgrade-failure.test.ts.

import t, { type Test } from 'tap'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { get } from 'node:http'
import { join } from 'node:path'
import { connect, echoServer, freePort, sleep, waitFor } from './helpers/net.ts'
import { runCliAsync, spawnProxy, type RunningProxy } from './helpers/cli.ts'
import { alive, connectLoop, entryFile, healthy, killAllAtEnd, roundTrip, start, upgradeTestSetup } from './helpers/upgrade.ts'
import { upgradeExecArgv } from '../src/upgrade.ts'

const { dir } = upgradeTestSetup(t, 'upgrade')

/**
 * A proxy started from a config file of its own: the admin API and routes (name: port) to the echo
 * server; `rewrite` writes the file anew (the upgrade reads it again).
 */
async function fromConfig(t: Test, name: string, echoPort: number, admin: number, routes: Record<string, number>): Promise<{ proxy: RunningProxy; rewrite(admin: number, routes: Record<string, number>): void }> {
  const config = join(dir, `${name}.yaml`)
  const rewrite = (adminPort: number, r: Record<string, number>): void =>
    writeFileSync(config, `admin: 127.0.0.1:${adminPort}\nshutdownGrace: 60\nroutes:\n${Object.entries(r).map(([n, port]) => `  - {name: ${n}, listen: "127.0.0.1:${port}", target: "127.0.0.1:${echoPort}"}\n`).join('')}`)
  rewrite(admin, routes)
  const proxy = spawnProxy(['--config', config], {}, entryFile(t, dir, name))
  killAllAtEnd(t, proxy)
  await proxy.line((l) => l.msg === 'admin listening', 30_000)
  return { proxy, rewrite }
}

t.test('the new process takes the listeners; a connect loop through the upgrade sees no refusal or reset', async (t) => {
  const echoPort = await echoServer(t)
  const adminPort = await freePort()
  const pidFile = join(dir, 'upgrade.pid')
  const entry = entryFile(t, dir, 'loop')
  const { proxy, port, since } = await start(t, entry, ['--target', `127.0.0.1:${echoPort}`, '--admin', `127.0.0.1:${adminPort}`, '--pid-file', pidFile])
  const oldPid = proxy.proc.pid!
  t.ok(await waitFor(() => existsSync(pidFile), 5000))
  let stop = false
  let loop: Promise<{ ok: number; errors: string[] }> | undefined
  const mark = proxy.logs.length
  proxy.proc.kill('SIGUSR2')
  // The loop starts once the upgrade has (sessions open at SIGUSR2: upgrade-sessions.test.ts).
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

t.test('without the native helper SIGUSR2 logs one line and changes nothing', async (t) => {
  const echoPort = await echoServer(t)
  const entry = entryFile(t, dir, 'refuse')
  const { proxy, port } = await start(t, entry, ['--target', `127.0.0.1:${echoPort}`, '--no-native'])
  const s = await connect(port)
  t.equal(await roundTrip(s, 'a'), 'a')
  const mark = proxy.logs.length
  proxy.proc.kill('SIGUSR2')
  const line = await proxy.line((l) => proxy.logs.indexOf(l) >= mark && l.msg.startsWith('SIGUSR2'))
  t.equal(line.msg, 'SIGUSR2 ignored: the upgrade needs the native helper (descriptor passing); nothing changed')
  const command = await runCliAsync(['upgrade', '--pid', String(proxy.proc.pid)])
  t.same([command.status, command.stderr], [1, `ka-proxy: upgrade failed, pid ${proxy.proc.pid} still serves: the upgrade needs the native helper (descriptor passing); nothing changed\n`], 'ka-proxy upgrade says so and fails')
  await sleep(300)
  t.equal(await roundTrip(s, 'b'), 'b', 'the session goes on')
  t.notOk(proxy.logs.slice(mark).some((l) => l.msg.startsWith('upgrade')), 'no upgrade started')
  s.end()
  t.equal(await proxy.stop('SIGTERM'), 0)
})

t.test('target health carries over: a target down before the upgrade is not tried, logged or failed over again', async (t) => {
  const echoPort = await echoServer(t)
  const downPort = await freePort()
  const entry = entryFile(t, dir, 'health')
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

t.test('the new process reads the config file again: a moved admin API, a removed and an added route', async (t) => {
  const echoPort = await echoServer(t)
  const [keep, gone, added, adminA, adminB] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()])
  const { proxy, rewrite } = await fromConfig(t, 'reread', echoPort, adminA, { keep, gone })
  rewrite(adminB, { keep, added })
  proxy.proc.kill('SIGUSR2')
  const took = await proxy.line((l) => l.msg.startsWith('upgrade: took over the listeners'), 30_000)
  t.same(took.notTaken, [`listen 127.0.0.1:${gone}`, `admin 127.0.0.1:${adminA}`], 'the removed route and the moved admin API do not take their sockets')
  t.equal(took.listeners, 3)
  t.equal(await proxy.exited, 0)
  t.ok(await healthy(adminB), 'the admin API at its new address')
  for (const port of [keep, added]) {
    const s = await connect(port)
    t.equal(await roundTrip(s, `to ${port}`), `to ${port}`)
    s.end()
  }
  for (const port of [gone, adminA]) {
    const refused = await connect(port).then((s) => (s.destroy(), 'connected'), (err: NodeJS.ErrnoException) => err.code)
    t.equal(refused, 'ECONNREFUSED', `127.0.0.1:${port} is closed once the old process has gone`)
  }
})

t.test("Node's flags: the inspector's and --watch stay with the old process, the others carry over", async (t) => {
  t.same(
    upgradeExecArgv(['--inspect', '--inspect-brk=0', '--inspect-port', '9300', '--inspect-wait=127.0.0.1:9301', '--debug-port=9302', '--watch', '--watch-path', 'src', '--max-old-space-size=300', '--import', 'tsx', '--expose-gc']),
    ['--max-old-space-size=300', '--import', 'tsx', '--expose-gc'],
  )
  const echoPort = await echoServer(t)
  const inspect = await freePort()
  const entry = { ...entryFile(t, dir, 'flags'), nodeFlags: [`--inspect=127.0.0.1:${inspect}`, '--max-old-space-size=300'] }
  const { proxy, port } = await start(t, entry, ['--target', `127.0.0.1:${echoPort}`])
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => l.msg.startsWith('upgrade done'), 30_000)
  const newPid = Number(done.newPid)
  const argv = readFileSync(`/proc/${newPid}/cmdline`, 'utf8').split('\0')
  t.notOk(argv.some((a) => a.startsWith('--inspect')), `no inspector flag: ${argv.join(' ')}`)
  t.ok(argv.includes('--max-old-space-size=300') && argv.includes('tsx'), 'the heap limit and the loader carry over')
  const s = await connect(port)
  t.equal(await roundTrip(s, 'served'), 'served')
  s.end()
  process.kill(newPid, 'SIGTERM')
})

/** One request on a connection of its own: the kernel picks which process accepts it. */
function freshGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    }).on('error', reject)
  })
}

t.test('after an upgrade only the new process answers the admin API: it counts the moved sessions, the old one (still draining) is silent', async (t) => {
  const echoPort = await echoServer(t)
  const [keep, gone, admin] = await Promise.all([freePort(), freePort(), freePort()])
  const { proxy, rewrite } = await fromConfig(t, 'admin-owner', echoPort, admin, { keep, gone })
  const moved = [await connect(keep), await connect(keep)]
  for (const s of moved) t.equal(await roundTrip(s, 'x'), 'x')
  const stays = await connect(gone)
  t.equal(await roundTrip(stays, 'y'), 'y')
  // Its route removed by a reload first, it drains in the old process (an upgrade moves only the
  // sessions of running routes) and keeps that process alive through the upgrade.
  rewrite(admin, { keep })
  proxy.proc.kill('SIGHUP')
  await proxy.line((l) => l.msg === 'config reloaded', 10_000)
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => l.msg.startsWith('upgrade done'), 30_000)
  t.equal(done.sessions, 2)
  t.equal(done.sessionsLeft, 1)
  const answers = new Map<string, number>()
  for (let i = 0; i < 24; i++) {
    const [metrics, health, sessions] = await Promise.all([freshGet(admin, '/metrics'), freshGet(admin, '/healthz'), freshGet(admin, '/sessions')])
    const active = metrics.body.split('\n').filter((l) => l.startsWith('ka_proxy_sessions_active')).join('; ')
    const listed = (JSON.parse(sessions.body) as { sessions: Array<{ route: string }> }).sessions.map((s) => s.route).join(',')
    const key = `${active} | healthz ${health.status} | sessions ${listed}`
    answers.set(key, (answers.get(key) ?? 0) + 1)
  }
  t.same([...answers.keys()], ['ka_proxy_sessions_active{route="keep"} 2 | healthz 200 | sessions keep,keep'], 'every answer is the new process\'s, with the two sessions it took')
  t.equal(proxy.proc.exitCode, null, 'while the old process still drains its one session')
  stays.end()
  t.equal(await proxy.exited, 0)
  for (const s of moved) s.end()
  process.kill(Number(done.newPid), 'SIGTERM')
})
