// The sessions' hand-over in messages (format 5): after the commit the old process sends the
// sessions a message at a time (125 each) and the new one starts each message's as it comes. Many
// sessions arrive whole across messages; a new process that dies between two messages costs only
// the sessions it had been sent and had not answered for (reset at both ends, never carried on
// with bytes it may have taken), while the ones never sent carry on in the old process, which
// listens again, and a later upgrade moves them.

import t from 'tap'
import type { Socket } from 'node:net'
import { request } from 'undici'
import { connect, echoServer, freePort, waitFor } from './helpers/net.ts'
import { entryFile, killAllAtEnd, MAIN, NATIVE, roundTrip, start, upgradeTestSetup } from './helpers/upgrade.ts'
import { spawnProxy } from './helpers/cli.ts'

const { dir } = upgradeTestSetup(t, 'upgrade-batches')

const SESSIONS = 400
/** Sessions per `sessions` message (src/upgrade.ts SESSIONS_PER_MESSAGE). */
const PER_MESSAGE = 125

interface Client {
  socket: Socket
  /** How it ended, if it did: 'reset' (ECONNRESET), 'end' (a FIN), another error code. */
  ended?: string
}

/** `n` sessions through the proxy, each proven by an echo; in connection order (their ids' order). */
async function sessions(port: number, n: number): Promise<Client[]> {
  const out: Client[] = []
  for (let i = 0; i < n; i++) {
    const socket = await connect(port)
    const c: Client = { socket }
    socket.on('error', (err: NodeJS.ErrnoException) => (c.ended ??= err.code === 'ECONNRESET' ? 'reset' : String(err.code)))
    socket.on('end', () => (c.ended ??= 'end'))
    out.push(c)
    if ((await roundTrip(socket, `s${i}`)) !== `s${i}`) throw new Error(`session ${i}: no echo`)
  }
  return out
}

/** Whether a session still echoes (within 3 s). */
async function echoes(c: Client, text: string): Promise<boolean> {
  if (c.ended !== undefined) return false
  return Promise.race([roundTrip(c.socket, text).then((got) => got === text, () => false), new Promise<boolean>((r) => setTimeout(() => r(false), 3000))])
}

t.test(`${SESSIONS} sessions move in messages of ${PER_MESSAGE}: every one echoes after, with its id and its keepalive; the counts agree`, async (t) => {
  const target = await echoServer(t)
  const entry = entryFile(t, dir, 'many')
  const admin = await freePort()
  // Settings of its own on both legs: the config does not change, so the new process sets none
  // again (the sockets keep theirs), and /sessions must still read them back.
  const { proxy, port } = await start(t, entry, ['--target', `127.0.0.1:${target}`, '--admin', `127.0.0.1:${admin}`, '--idle', '41', '--interval', '6', '--count', '4'])
  const clients = await sessions(port, SESSIONS)
  const oldPid = proxy.proc.pid!
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => l.msg.startsWith('upgrade done'), 60_000)
  t.equal(done.sessions, SESSIONS, 'the old process moved them all')
  t.equal(done.sessionsLeft, 0, 'none left in the old process')
  const took = await proxy.line((l) => l.msg === 'upgrade: took over the listeners and sessions', 10_000)
  t.equal(took.sessions, SESSIONS, 'the new process took them all')
  t.equal(took.refused, 0)
  t.equal(await proxy.exited, 0, 'the old process exits')
  const res = await request(`http://127.0.0.1:${admin}/sessions`)
  const listed = ((await res.body.json()) as { sessions: Array<{ legs: Record<string, { keepalive: { idle: number; interval: number; count: number } } | null> }> }).sessions
  t.equal(listed.length, SESSIONS, '/sessions in the new process lists them')
  const read = new Set(listed.flatMap((s) => ['client', 'target'].map((leg) => JSON.stringify(s.legs[leg]?.keepalive && [s.legs[leg]!.keepalive.idle, s.legs[leg]!.keepalive.interval, s.legs[leg]!.keepalive.count]))))
  t.same([...read], [JSON.stringify([41, 6, 4])], 'every leg reads back the route\'s keepalive')
  const results = await Promise.all(clients.map((c, i) => echoes(c, `after ${i}`)))
  t.equal(results.filter(Boolean).length, SESSIONS, 'every session echoes after the upgrade')
  for (const c of clients) c.socket.end()
  t.ok(await waitFor(() => proxy.logs.filter((l) => l.msg === 'session closed').length === SESSIONS, 10_000), 'one session line each')
  const closed = proxy.logs.filter((l) => l.msg === 'session closed')
  t.ok(closed.every((l) => l.pid === Number(done.newPid)), 'all from the new process')
  t.equal(new Set(closed.map((l) => l.session)).size, SESSIONS, 'with the ids they had')
  t.notOk(closed.some((l) => l.pid === oldPid))
  process.kill(Number(done.newPid), 'SIGTERM')
})

t.test('a new process that dies between two messages: the sessions it was sent and did not answer for are reset, the rest carry on in the old process, which listens again', async (t) => {
  const target = await echoServer(t)
  const entry = entryFile(t, dir, 'dies')
  const { proxy, port } = await start(t, entry, ['--target', `127.0.0.1:${target}`])
  killAllAtEnd(t, proxy)
  const clients = await sessions(port, SESSIONS)
  // The new release answers the first message, then dies as it is about to answer the second.
  entry.install(
    `const { loadNative } = await import(${JSON.stringify(NATIVE)})\n` +
      `const n = loadNative().binding\nconst send = n.sendFds\nlet took = 0\n` +
      `n.sendFds = (sock, payload, fds, ms) => {\n` +
      `  if (payload.includes('"type":"took"') && ++took === 2) process.kill(process.pid, 'SIGKILL')\n` +
      `  return send(sock, payload, fds, ms)\n}\n` +
      `await import(${JSON.stringify(MAIN)})\n`,
  )
  proxy.proc.kill('SIGUSR2')
  const failed = await proxy.line((l) => l.msg.startsWith('upgrade failed'), 60_000)
  const reason = String(failed.reason)
  const m = /was killed by SIGKILL before it answered after it took over; (\d+) sessions it was handed reset/.exec(reason)
  t.ok(m, `one line says why: ${reason}`)
  const lost = Number(m?.[1] ?? NaN)
  t.ok(lost === PER_MESSAGE || lost === 2 * PER_MESSAGE, `the unanswered messages' sessions: ${lost}`)
  t.equal(proxy.proc.exitCode, null, 'the old process serves on')
  // The first message's sessions died with the new process; the next `lost` were reset here.
  const firstGone = await waitFor(() => clients.slice(0, PER_MESSAGE).every((c) => c.ended !== undefined), 5000)
  t.ok(firstGone, 'the sessions the new process had taken ended with it')
  const resetOk = await waitFor(() => clients.slice(PER_MESSAGE, PER_MESSAGE + lost).every((c) => c.ended === 'reset'), 5000)
  t.ok(resetOk, `the ${lost} unanswered ones got an RST: ${JSON.stringify([...new Set(clients.slice(PER_MESSAGE, PER_MESSAGE + lost).map((c) => c.ended ?? 'open'))])}`)
  const rest = clients.slice(PER_MESSAGE + lost)
  const alive = await Promise.all(rest.map((c, i) => echoes(c, `kept ${i}`)))
  t.equal(alive.filter(Boolean).length, rest.length, `the ${rest.length} never sent echo through the old process`)
  const fresh = await connect(port)
  t.equal(await roundTrip(fresh, 'fresh'), 'fresh', 'the old process listens again')
  fresh.end()
  // The real release: the next upgrade moves what is left.
  entry.real()
  const mark = proxy.logs.length
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => proxy.logs.indexOf(l) >= mark && l.msg.startsWith('upgrade done'), 60_000)
  t.equal(done.sessions, rest.length, 'a later upgrade moves the sessions that stayed')
  t.equal(await proxy.exited, 0)
  const after = await Promise.all(rest.map((c, i) => echoes(c, `moved ${i}`)))
  t.equal(after.filter(Boolean).length, rest.length, 'and they echo from the new process')
  for (const c of clients) c.socket.destroy()
  process.kill(Number(done.newPid), 'SIGTERM')
})

t.test('a new process short of descriptors: the sessions it has no room for stay in the old process, none is cut or reset, the upgrade completes', async (t) => {
  const target = await echoServer(t)
  const entry = entryFile(t, dir, 'tight')
  const port = await freePort()
  // Room for the old process's 400 sessions (two descriptors each) and little more: the new
  // process, under the same limit, cannot take them all.
  const proxy = spawnProxy(['--listen', `127.0.0.1:${port}`, '--target', `127.0.0.1:${target}`], {}, entry, ['prlimit', '--nofile=850:850', '--'])
  killAllAtEnd(t, proxy)
  await proxy.line((l) => l.msg === 'listening', 30_000)
  const clients = await sessions(port, SESSIONS)
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => l.msg.startsWith('upgrade done') || l.msg.startsWith('upgrade failed'), 60_000)
  t.match(done.msg, /^upgrade done/, `the upgrade completes: ${done.msg} ${String(done.reason ?? '')}`)
  const moved = Number(done.sessions)
  const left = Number(done.sessionsLeft)
  t.ok(moved > 0 && left > 0, `some moved (${moved}), the rest stayed (${left})`)
  t.equal(moved + left, SESSIONS, 'every session is in one process or the other')
  const why = await proxy.line((l) => l.pid === proxy.proc.pid && l.msg.startsWith('upgrade: sessions stay in this process'), 5000).catch(() => undefined)
  t.equal(why?.reason, 'descriptor_limit', 'one line says why they stay')
  t.notOk(proxy.logs.some((l) => l.msg === 'session closed'), 'no session was closed')
  const results = await Promise.all(clients.map((c, i) => echoes(c, `tight ${i}`)))
  t.equal(results.filter(Boolean).length, SESSIONS, 'every session echoes, from whichever process has it')
  t.equal(proxy.proc.exitCode, null, 'the old process waits for the sessions it kept')
  for (const c of clients) c.socket.destroy()
  t.equal(await proxy.exited, 0, 'and exits once they ended')
  process.kill(Number(done.newPid), 'SIGTERM')
})
