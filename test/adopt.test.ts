// A session moved from one listener to another (what an upgrade does across processes, here in
// one process): the first lets go of both sockets without a close (Session.handOver, the pump's
// detach), the second carries on from the state handed over (Listener.adoptSession, the pump's
// adopt). Nothing a peer can see happens: no FIN, no RST, no byte lost, reordered or repeated,
// the bytes the first still held (a slow reader) go first, a half-closed session stays half-closed,
// and the one `session closed` line has the original id, start and whole byte counts.

import t, { type Test } from 'tap'
import type { Socket } from 'node:net'
import { closeSync } from 'node:fs'
import { collect, connect, manualTarget, readAll, sleep, waitFor } from './helpers/net.ts'
import { payload, writeChunked } from './helpers/payload.ts'
import { startProxy, type TestProxy } from './helpers/proxy.ts'
import { nativeRelayClass } from '../src/transport/native.ts'
import type { AdoptedSession } from '../src/listener.ts'

const native = nativeRelayClass() !== undefined

async function pair(t: Test) {
  const target = await manualTarget(t)
  const from = await startProxy({ target: `127.0.0.1:${target.port}` })
  const to = await startProxy({ target: `127.0.0.1:${target.port}` })
  t.teardown(async () => {
    await from.stop()
    await to.stop()
  })
  return { target, from, to }
}

/** Moves every session of `from` to `to`, as the hand-over does; the movers' copies are closed. */
function move(from: TestProxy, to: TestProxy): AdoptedSession[] {
  const moved = from.listener.handOverSessions()
  const adopted = moved.map((m) => to.listener.adoptSession(m.identity, m.target, m.transport.fds, m.transport.state))
  for (const m of moved) for (const fd of m.transport.fds) closeSync(fd)
  for (const a of adopted) a.start()
  return adopted
}

function noLineFrom(t: Test, proxy: TestProxy): void {
  t.notOk(proxy.logs.some((l) => l.msg === 'session closed'), 'the first listener wrote no session line')
}

t.test('a slow reader: the bytes held at hand-over come first, nothing lost, both ways', { skip: !native && 'needs the native pump' }, async (t) => {
  const { target, from, to } = await pair(t)
  const client = await connect(from.port)
  const server = await target.next()
  const toClient = payload(16 << 20)
  const toTarget = payload(8 << 20)
  client.pause()
  const serverWrote = writeChunked(server, toClient, { end: false })
  const clientWrote = writeChunked(client, toTarget, { end: false })
  const atTarget = collect(server)
  const session = [...from.listener.sessions][0]!
  t.ok(await waitFor(() => session.queuedBytes('client') > 0, 5000), 'the pump holds bytes for the slow client')
  const held = session.queuedBytes('client')
  const id = session.id
  const adopted = move(from, to)
  t.equal(adopted.length, 1, 'the session moved')
  t.equal(adopted[0]!.session.id, id, 'with its id')
  t.equal(from.listener.sessions.size, 0)
  const atClient = collect(client)
  client.resume()
  await Promise.all([serverWrote, clientWrote])
  await waitFor(() => atClient.length() >= toClient.length && atTarget.length() >= toTarget.length, 30_000)
  t.ok(atClient.data().equals(toClient), `the client got every byte in order (${held} were held at hand-over)`)
  t.ok(atTarget.data().equals(toTarget), 'the target got every byte in order')
  client.end()
  server.end()
  const [line] = await to.closed(1)
  t.equal(line!.session, id, 'one line, with the original id')
  t.equal(line!.bytesToClient, toClient.length, 'whole byte count to the client')
  t.equal(line!.bytesToTarget, toTarget.length, 'whole byte count to the target')
  noLineFrom(t, from)
})

t.test('a half-closed session stays half-closed and finishes normally', { skip: !native && 'needs the native pump' }, async (t) => {
  const { target, from, to } = await pair(t)
  const client = await connect(from.port)
  const server = await target.next()
  const request = payload(100_000)
  const atTarget = readAll(server)
  await writeChunked(client, request, { end: true })
  t.ok((await atTarget).equals(request), 'the request and the client FIN reached the target')
  const session = [...from.listener.sessions][0]!
  await waitFor(() => session.reason === 'client_end', 2000)
  move(from, to)
  const atClient = readAll(client)
  const response = payload(2 << 20)
  await sleep(50)
  await writeChunked(server, response, { end: true })
  t.ok((await atClient).equals(response), 'the response, then the end, reached the client')
  const [line] = await to.closed(1)
  t.equal(line!.reason, 'client_end')
  t.equal(line!.clientClose, 'fin')
  t.equal(line!.targetClose, 'fin')
  t.equal(line!.bytesToTarget, request.length)
  t.equal(line!.bytesToClient, response.length)
  noLineFrom(t, from)
})

t.test('a session still connecting stays where it is', { skip: !native && 'needs the native pump' }, async (t) => {
  const from = await startProxy({ target: '10.255.255.1:9', connectTimeout: 1 })
  t.teardown(() => from.stop())
  const client = await connect(from.port)
  client.on('error', () => {})
  await waitFor(() => from.listener.sessions.size === 1, 2000)
  t.same(from.listener.handOverSessions(), [], 'nothing handed over')
  t.equal(from.listener.sessions.size, 1, 'the session stays')
  client.destroy()
})
