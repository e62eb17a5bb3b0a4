// The upgrade moves established sessions to the new process (the real command, real sockets):
// byte streams running both ways through it arrive whole and in order; bytes the old process
// held for a slow reader are delivered first; a half-closed session finishes normally; the
// adopted sockets carry the keepalive of the config read again (read back in /sessions); each
// session's one `session closed` line comes from the new process with its original id, start
// and whole byte counts. A new process that took the sessions but never reports ready loses none
// (the old one carries them on); a removed route's session moves too and drains in the new process
// as after a reload, so the old process exits at once. Listener-only behaviour is in upgrade.test.ts.

import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Socket } from 'node:net'
import { once } from 'node:events'
import { request } from 'undici'
import { collect, connect, endOf, freePort, loopback, manualTarget, readAll, sleep, waitFor } from './helpers/net.ts'
import { payload, writeChunked } from './helpers/payload.ts'
import { spawnProxy } from './helpers/cli.ts'
import { entryFile, killAllAtEnd, NATIVE, oneSession, twoWayStreams, upgradeTestSetup } from './helpers/upgrade.ts'
import { relaySockets } from '../bench/lab/ss.ts'
import { socketDescriptors } from '../bench/lab/pids.ts'

const { dir } = upgradeTestSetup(t, 'upgrade-sessions')

t.test('open sessions move: streams both ways, a slow reader, a half-closed one, keepalive, one whole log line each', async (t) => {
  const target = await manualTarget(t)
  const [port, admin] = await Promise.all([freePort(), freePort()])
  const config = join(dir, 'sessions.yaml')
  const write = (idle: number): void =>
    writeFileSync(config, `admin: 127.0.0.1:${admin}\nroutes:\n  - {name: r, listen: "127.0.0.1:${port}", target: "127.0.0.1:${target.port}", keepalive: { idle: ${idle}, interval: 7, count: 5 }}\n`)
  write(50)
  const entry = entryFile(t, dir, 'sessions')
  const proxy = spawnProxy(['--config', config], {}, entry)
  killAllAtEnd(t, proxy)
  await proxy.line((l) => l.msg === 'admin listening', 30_000)
  const oldPid = proxy.proc.pid!

  // 1. Streams both ways, written before, during and after the upgrade.
  const bulkClient = await connect(port)
  const bulkServer = await target.next()
  const up = payload(24 << 20)
  const down = payload(24 << 20)
  const atServer = collect(bulkServer)
  const atClient = collect(bulkClient)
  const bulkDone = Promise.all([writeChunked(bulkClient, up, { end: false }), writeChunked(bulkServer, down, { end: false })])

  // 2. A slow reader: the proxy holds bytes for it.
  const slowClient = await connect(port)
  const slowServer = await target.next()
  slowClient.pause()
  const slowData = payload(8 << 20)
  const slowWrote = writeChunked(slowServer, slowData, { end: true })

  // 3. Half-closed: the request and the client's FIN are through before the upgrade.
  const halfClient = await connect(port)
  const halfServer = await target.next()
  const requestBytes = payload(50_000)
  const requestAtServer = readAll(halfServer)
  await writeChunked(halfClient, requestBytes, { end: true })
  t.ok((await requestAtServer).equals(requestBytes), 'the request and the FIN reached the target before the upgrade')

  await sleep(300) // the slow session's queues fill
  const opened = proxy.logs.length
  write(40) // the new process reads the config again: other keepalive
  const before = Date.now()
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => proxy.logs.indexOf(l) >= opened && l.msg.startsWith('upgrade done'), 30_000)
  const newPid = Number(done.newPid)
  t.equal(done.sessions, 3, 'the three sessions moved')
  t.equal(done.sessionsLeft, 0, 'none left in the old process')
  t.ok(Number(done.heldBytes) > 0, `the old process held ${String(done.heldBytes)} bytes at hand-over, handed over with them`)
  const took = await proxy.line((l) => l.pid === newPid && l.msg.startsWith('upgrade: took over'), 10_000)
  t.equal(took.sessions, 3)
  t.equal(await proxy.exited, 0, 'the old process exits cleanly at once')

  // Keepalive of the config read again, read back on the adopted sockets; ids and counts continue.
  const asked = Date.now()
  const res = await request(`http://127.0.0.1:${admin}/sessions`)
  const listed = ((await res.body.json()) as { sessions: Array<{ session: number; ageMs: number; legs: Record<string, { keepalive: { idle: number; interval: number; count: number } } | null> }> }).sessions
  t.equal(listed.length, 3, '/sessions in the new process shows them')
  for (const s of listed) {
    for (const leg of ['client', 'target']) {
      const ka = s.legs[leg]?.keepalive
      t.same(ka && [ka.idle, ka.interval, ka.count], [40, 7, 5], `session ${s.session}: ${leg} keepalive read back as the new config sets it`)
    }
    t.ok(s.ageMs >= asked - before, `session ${s.session}: its age (${s.ageMs} ms) counts from its start in the old process`)
  }

  // The slow reader reads now: every byte, in order.
  const slowAtClient = readAll(slowClient)
  slowClient.resume()
  await slowWrote
  t.ok((await slowAtClient).equals(slowData), 'the slow reader got every byte in order, the held ones first')
  slowClient.end()

  // The half-closed session finishes: its response, then the end.
  const response = payload(1 << 20)
  const responseAtClient = readAll(halfClient)
  await writeChunked(halfServer, response, { end: true })
  t.ok((await responseAtClient).equals(response), 'the half-closed session got its response and its end')

  await bulkDone
  t.ok(await waitFor(() => atServer.length() >= up.length && atClient.length() >= down.length, 60_000), 'the streams arrived')
  t.ok(atServer.data().equals(up), 'client to target: no byte lost, reordered or repeated')
  t.ok(atClient.data().equals(down), 'target to client: no byte lost, reordered or repeated')
  bulkClient.end()
  bulkServer.end()

  const closed = async (n: number) => {
    await waitFor(() => proxy.logs.filter((l) => l.msg === 'session closed').length >= n, 10_000)
    return proxy.logs.filter((l) => l.msg === 'session closed')
  }
  const lines = await closed(3)
  t.same(lines.map((l) => l.pid), [newPid, newPid, newPid], 'each session closed line comes from the new process, once')
  const ids = listed.map((s) => s.session).sort()
  t.same(lines.map((l) => l.session).sort(), ids, 'with the original ids')
  const byTarget = new Map(lines.map((l) => [Number(l.bytesToTarget), l]))
  t.equal(byTarget.get(up.length)?.bytesToClient, down.length, 'whole counts for the streams')
  t.equal(byTarget.get(0)?.bytesToClient, slowData.length, 'whole counts for the slow reader')
  const half = byTarget.get(requestBytes.length)
  t.equal(half?.bytesToClient, response.length, 'whole counts for the half-closed one')
  t.equal(half?.reason, 'client_end')
  for (const l of lines) {
    const age = listed.find((s) => s.session === l.session)?.ageMs ?? Infinity
    t.ok(Number(l.durationMs) >= age, `session ${String(l.session)}: its duration (${String(l.durationMs)} ms) counts from its start`)
  }
  t.notOk(proxy.logs.some((l) => l.pid === oldPid && l.msg === 'session closed'), 'the old process wrote no session line')
  // A new session after the upgrade does not reuse an id.
  const fresh = await connect(port)
  const freshServer = await target.next()
  fresh.end()
  freshServer.end()
  await waitFor(() => proxy.logs.filter((l) => l.msg === 'session closed').length >= 4, 10_000)
  const last = proxy.logs.filter((l) => l.msg === 'session closed')[3]!
  t.ok(Number(last.session) > Math.max(...ids), `a new session is numbered after the adopted ones (${String(last.session)})`)
  process.kill(newPid, 'SIGTERM')
})

t.test('a new process that took the sessions but never reports ready: the old process carries every one on', async (t) => {
  const { port, entry, proxy, client, server } = await oneSession(t, dir, 'taker')
  const route = `127.0.0.1:${port}`
  const hello = JSON.stringify({ v: 2, type: 'hello', pid: 0, accepts: [2], routes: [route] })
  entry.install(
    `const { loadNative } = await import(${JSON.stringify(NATIVE)})\nconst n = loadNative().binding\n` +
      `n.sendFds(3, Buffer.from(${JSON.stringify(hello)}), [], 1000)\nconst kept = []\n` +
      `for (;;) { try { const got = n.recvFds(3, 1 << 20, 50); if (got === null) break; kept.push(got) } catch { await new Promise((r) => setTimeout(r, 50)) } }\n` +
      `setInterval(() => {}, 1000)\n`,
  )
  const streams = twoWayStreams(client, server)
  const mark = proxy.logs.length
  proxy.proc.kill('SIGUSR2')
  const failed = await proxy.line((l) => proxy.logs.indexOf(l) >= mark && l.msg.startsWith('upgrade failed'), 30_000)
  t.match(String(failed.reason), /did not report ready within 10 s/)
  const whole = await streams.whole()
  t.ok(whole.arrived, 'the streams arrived')
  t.ok(whole.up, 'client to target: whole and in order across the failed attempt')
  t.ok(whole.down, 'target to client: whole and in order across the failed attempt')
  client.end()
  server.end()
  const line = await proxy.line((l) => l.msg === 'session closed', 10_000)
  t.equal(line.pid, proxy.proc.pid, 'the old process ends the session')
  t.equal(line.bytesToTarget, 8 << 20)
  t.equal(line.bytesToClient, 8 << 20)
  t.equal(line.reason, 'client_end')
  t.equal(await proxy.stop('SIGTERM'), 0)
})

t.test('a session of a route the new config no longer has moves too and drains in the new process as after a reload; the old process exits at once', async (t) => {
  const target = await manualTarget(t)
  const [keep, gone] = await Promise.all([freePort(), freePort()])
  const config = join(dir, 'removed.yaml')
  const route = (name: string, port: number, extra = ''): string => `  - {name: ${name}, listen: "127.0.0.1:${port}", target: "127.0.0.1:${target.port}"${extra}}\n`
  // The removed route has settings of its own (as the old process ran them, they go along).
  const goneRoute = route('gone', gone, ', halfCloseTimeout: 30, keepalive: { idle: 33, interval: 3, count: 3 }')
  const grace = 2
  writeFileSync(config, `shutdownGrace: ${grace}\nroutes:\n${route('keep', keep)}${goneRoute}`)
  const entry = entryFile(t, dir, 'removed')
  const proxy = spawnProxy(['--config', config], {}, entry)
  killAllAtEnd(t, proxy)
  await proxy.line((l) => l.msg === 'listening' && l.route === 'gone', 30_000)
  const oldPid = proxy.proc.pid!
  const kept = await connect(keep)
  const keptServer = await target.next()
  const moves = await connect(gone)
  const movesServer = await target.next()
  const echo = async (from: Socket, to: Socket, text: string): Promise<string> => {
    from.write(text)
    const [got] = (await once(to, 'data')) as [Buffer]
    return String(got)
  }
  t.equal(await echo(moves, movesServer, 'before'), 'before')
  writeFileSync(config, `shutdownGrace: ${grace}\nroutes:\n${route('keep', keep)}`)
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => l.msg.startsWith('upgrade done'), 30_000)
  const upgraded = performance.now()
  const newPid = Number(done.newPid)
  t.equal(done.sessions, 2, "both sessions moved, the removed route's too")
  t.equal(done.sessionsLeft, 0, 'none left in the old process')
  const exitedAt = await Promise.race([proxy.exited.then(() => performance.now()), sleep(5000).then(() => undefined)])
  t.ok(exitedAt !== undefined && exitedAt - upgraded < 3000, `the old process exits at once (${exitedAt === undefined ? 'not within 5 s' : `${Math.round(exitedAt - upgraded)} ms`})`)
  t.equal(proxy.proc.exitCode, 0)
  const draining = await proxy.line((l) => l.pid === newPid && l.msg === 'route removed: draining', 10_000)
  t.match(draining, { route: 'gone', sessions: 1 }, 'the new process drains the removed route, as a reload does')
  const ends = Promise.all([endOf(moves), endOf(movesServer)])
  t.equal(await echo(moves, movesServer, 'still here'), 'still here', 'it still relays client to target, from the new process')
  t.equal(await echo(movesServer, moves, 'and back'), 'and back', 'and target to client')
  t.equal(await echo(kept, keptServer, 'moved'), 'moved', "the kept route's session relays from the new process")
  // As after a reload: shutdownGrace to finish by itself, then a FIN to each peer.
  t.same(await Promise.race([ends, sleep(grace * 1000 + 10_000).then(() => 'not ended')]), ['end', 'end'], 'the grace over, both peers get a FIN')
  const line = await proxy.line((l) => l.msg === 'session closed' && l.route === 'gone', 10_000)
  const drainedMs = Number(line.time) - Number(draining.time)
  t.ok(drainedMs >= grace * 1000 - 50 && drainedMs < grace * 1000 + 2000, `at the end of shutdownGrace (${drainedMs} ms after the drain began, grace ${grace} s)`)
  t.match(line, { pid: newPid, reason: 'shutdown', clientClose: 'fin', targetClose: 'fin', bytesToTarget: 'before'.length + 'still here'.length, bytesToClient: 'and back'.length }, 'its one line, from the new process, with its whole counts')
  t.notOk(proxy.logs.some((l) => l.pid === oldPid && l.msg === 'session closed'), 'the old process ended nothing')
  t.equal(await echo(kept, keptServer, 'unaffected'), 'unaffected', "the kept route's session goes on")
  kept.end()
  keptServer.end()
  process.kill(newPid, 'SIGTERM')
})

t.test('a peer resets while an adopted session still holds bytes for a client that does not read: the new process ends it with the right reason, the survivor gets an RST, nothing leaks', async (t) => {
  // Session `normal` is the one the others must not disturb; the flush bound is short so that the
  // survivor that never reads gets its RST soon.
  const { port, proxy, client: normal, server: normalServer, target } = await oneSession(t, dir, 'reset', ['--flush-timeout', '1'])
  const oldPid = proxy.proc.pid!
  /** A session whose client does not read while its target sends more than the buffers hold. */
  const slow = async (): Promise<{ client: Socket; server: Socket }> => {
    const client = await connect(port)
    const server = await target.next()
    client.pause()
    server.write(payload(8 << 20))
    return { client, server }
  }
  const a = await slow() // its client resets: the target survives
  const c = await slow() // its target resets: the client, which does not read, survives
  // The proxy's legs of the two, as ss shows them: the client leg's peer, the target leg's own address.
  const legs = [a, c].flatMap((s) => [`127.0.0.1:${s.client.localPort}`, `127.0.0.1:${s.server.remotePort}`])
  await sleep(300) // the buffers fill and the pump holds the rest
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => l.msg.startsWith('upgrade done'), 30_000)
  const newPid = Number(done.newPid)
  t.equal(done.sessions, 3, 'the three sessions moved')
  t.ok(Number(done.heldBytes) > 0, `with ${String(done.heldBytes)} bytes held for the slow clients`)
  t.equal(await proxy.exited, 0, 'the old process exits')
  await proxy.line((l) => l.pid === newPid && l.msg.startsWith('upgrade: took over'), 10_000)

  const closed = (s: { client: Socket }) => {
    const address = `127.0.0.1:${s.client.localPort}`
    return proxy.line((l) => l.msg === 'session closed' && l.client === address, 10_000)
  }
  const aClosed = closed(a)
  const cClosed = closed(c)
  const aServerEnd = endOf(a.server)
  a.client.resetAndDestroy()
  t.match(await aServerEnd, /^(ECONNRESET|EPIPE)$/, 'the client reset: the target, the survivor, gets an RST')
  t.match(await aClosed, { pid: newPid, reason: 'client_reset', leg: 'client', clientClose: 'failed', targetClose: 'rst' }, 'its one line from the new process: client_reset')

  const cClientEnd = endOf(c.client)
  c.server.resetAndDestroy()
  t.equal(await cClientEnd, 'ECONNRESET', 'the target reset: the client, which did not read, gets an RST')
  t.match(await cClosed, { pid: newPid, reason: 'target_reset', leg: 'target', targetClose: 'failed', clientClose: 'rst' }, 'its one line from the new process: target_reset')

  normal.write('unaffected')
  t.equal(String(((await once(normalServer, 'data')) as [Buffer])[0]), 'unaffected', 'the other session relays on, one way')
  normalServer.write('and back')
  t.equal(String(((await once(normal, 'data')) as [Buffer])[0]), 'and back', 'and the other')
  // Nothing leaks: the new process holds the listening socket and the other session's two legs,
  // and the kernel holds no socket of the two sessions reset.
  t.ok(await waitFor(() => socketDescriptors([newPid]) === 3, 5000), `the new process holds 3 network sockets (${socketDescriptors([newPid])})`)
  const left = (await relaySockets(loopback(port), loopback(target.port))).filter((s) => s.state !== 'TIME-WAIT')
  t.same(left.filter((s) => s.pids.includes(newPid)).length, 2, "ss: only the other session's two legs are the new process's")
  t.same(left.filter((s) => legs.includes(`${s.local.host}:${s.local.port}`) || legs.includes(`${s.peer.host}:${s.peer.port}`)).map((s) => s.state), [], 'ss: nothing left of the sessions reset')
  t.notOk(proxy.logs.some((l) => l.pid === oldPid && l.msg === 'session closed'), 'the old process ended nothing')
  normal.end()
  normalServer.end()
  process.kill(newPid, 'SIGTERM')
})
