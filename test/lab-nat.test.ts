// The lab itself: the NAT really turns an idle flow into a silent blackhole, faults do what
// they say, and nothing is left behind. If these fail, no survival number means anything.

import t from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { startClientDriver, startEchoServer, tcpSockets, sleep } from '../bench/lab/index.ts'
import { runSync } from '../bench/lab/exec.ts'
import { statFields } from '../bench/lab/pids.ts'
import { NAT_TIMEOUT, labFor, labSkip } from './lab-support.ts'

const skip = await labSkip(false)

/** Alive and not a zombie waiting for a parent (which may be a container's init) to reap it. */
function running(pid: number): boolean {
  const state = statFields(pid)?.[0]
  return state !== undefined && state !== 'Z'
}

function netnsList(): string {
  return runSync('ip', ['netns', 'list']).stdout
}

t.test('a direct connection idle longer than T dies silently; a fresh one works', { skip }, async t => {
  const lab = await labFor(t)
  await startEchoServer(lab, [7000])
  const app = await startClientDriver(lab)
  const server = { host: lab.addresses.server, port: 7000 }
  t.equal(await app.open('kept', server, 2), 2, 'sessions open through the NAT')
  t.equal(await app.open('idle', server, 2), 2)

  await sleep(NAT_TIMEOUT * 1000 / 2)
  t.same(Object.values(await app.ping('kept', 2000)), ['ok', 'ok'], 'idle shorter than T: still works')
  const dropsBefore = await lab.natDrops()

  await sleep((NAT_TIMEOUT + 1) * 1000)
  t.same(Object.values(await app.ping('idle', 2000)), ['timeout', 'timeout'], 'idle longer than T: the echo never comes back')
  t.same(app.closes('idle'), [], 'and nobody is told: no RST, no FIN')
  t.ok(await lab.natDrops() > dropsBefore, 'the NAT dropped the packets of the forgotten flow as INVALID')
  t.equal(await app.open('fresh', server, 1), 1, 'a new connection gets through')
})

t.test('faults: blackhole and heal, freeze and thaw, reset', { skip }, async t => {
  const lab = await labFor(t, 60)
  await startEchoServer(lab, [7000])
  const app = await startClientDriver(lab)
  t.equal(await app.open('s', { host: lab.addresses.server, port: 7000 }, 1), 1)

  await lab.faults.blackholeServer()
  t.same(Object.values(await app.ping('s', 1000)), ['timeout'], 'blackholed server: no echo')
  await lab.faults.heal()
  t.same(Object.values(await app.ping('s', 5000)), ['ok'], 'healed: echo again')

  await lab.faults.freezeServer()
  t.same(Object.values(await app.ping('s', 1000)), ['timeout'], 'frozen server: no echo')
  const sockets = await tcpSockets(lab.ns('client'))
  t.ok(sockets.some(s => s.state === 'ESTAB' && s.peer.port === 7000), 'but the connection is still established (its kernel answers)')
  lab.faults.thawServer()
  t.same(Object.values(await app.ping('s', 3000)), ['ok'], 'thawed: echo again')

  await lab.faults.resetServer(7000)
  await sleep(200)
  t.same(app.closes('s').map(c => c.how), ['rst'], 'reset: the app sees an RST')
})

t.test('namespaces and processes are removed on destroy and on SIGTERM', { skip }, async t => {
  const lab = await labFor(t)
  const names = [lab.ns('client'), lab.ns('router'), lab.ns('server')]
  t.ok(names.every(n => netnsList().includes(n)), 'namespaces exist while the lab runs')
  await lab.destroy()
  t.ok(names.every(n => !netnsList().includes(n)), 'and are gone after destroy')

  const holder = fileURLToPath(new URL('./fixtures/lab-hold.ts', import.meta.url))
  const child = spawn(process.execPath, ['--import', 'tsx', holder], { stdio: ['ignore', 'pipe', 'inherit'] })
  const [line] = await new Promise<string[]>(resolve => {
    createInterface({ input: child.stdout }).once('line', l => resolve([l]))
  })
  const held = JSON.parse(line ?? '{}') as { namespaces: string[], pids: number[] }
  t.ok(held.namespaces.every(n => netnsList().includes(n)), 'a lab held by another process exists')
  const exited = new Promise(resolve => child.once('exit', (code, signal) => resolve(signal ?? code)))
  child.kill('SIGTERM')
  // Killed by the signal, or exit status 128 + 15 where a test runner's hooks also listen for it.
  t.ok([143, 'SIGTERM'].includes(await exited as number | string), 'SIGTERM still ends that process')
  t.ok(held.namespaces.every(n => !netnsList().includes(n)), 'and its namespaces are gone')
  t.same(held.pids.filter(running), [], 'and so are the processes it ran in them')
})
