// Sessions over a pair link, end to end on loopback: client -> near ka-proxy -> TLS link -> far
// ka-proxy -> server. Bytes arrive byte-exact both ways, a FIN crosses as a FIN, a reset as a
// reset, and the plain legs get their keepalive as any session's.

import t from 'tap'
import type { Socket } from 'node:net'
import { connect, endOf, listen, readAll, waitFor } from './helpers/net.ts'
import { payload, writeChunked } from './helpers/payload.ts'
import { startPair } from './helpers/pair.ts'
import { tcpSockets } from '../bench/lab/ss.ts'

/** Echoes what it reads; after the client's FIN, writes "bye" and ends (a response after a half-close). */
function echoThenBye(s: Socket): void {
  s.on('error', () => {})
  s.pipe(s, { end: false })
  s.on('end', () => s.end('bye'))
}

t.test('bulk both ways, byte-exact, and a FIN that crosses as a FIN each way', async (t) => {
  const { server, port } = await listen(echoThenBye)
  t.teardown(() => server.close())
  const { near, far } = await startPair(t, port)
  const client = await connect(near.port)
  const data = payload(8 * 1024 * 1024)
  const got = readAll(client)
  await writeChunked(client, data, { end: true })
  const back = await got
  t.equal(back.length, data.length + 3, 'every byte back, then the response to the FIN')
  t.ok(back.subarray(0, data.length).equals(data), 'byte-exact, in order')
  t.equal(back.subarray(data.length).toString(), 'bye', 'the server saw the FIN and answered after it')
  t.ok(await waitFor(() => near.closed().length === 1 && far.closed().length === 1, 5000), 'one session line at each end')
  for (const end of [near, far]) {
    t.match(end.closed()[0], { reason: 'client_end', clientClose: 'fin', targetClose: 'fin', bytesToTarget: data.length, bytesToClient: data.length + 3 })
  }
})

t.test('a reset by the server reaches the client as a reset; one by the client reaches the server', async (t) => {
  let serverSide: Socket | undefined
  const { server, port } = await listen((s) => {
    s.on('error', () => {})
    serverSide = s
    s.on('data', () => s.resetAndDestroy())
  })
  t.teardown(() => server.close())
  const { near, far } = await startPair(t, port)
  const client = await connect(near.port)
  const ended = endOf(client)
  client.write('x')
  t.equal(await ended, 'ECONNRESET', 'the client gets an RST')
  t.ok(await waitFor(() => near.closed().length === 1 && far.closed().length === 1, 5000))
  t.match(far.closed()[0], { reason: 'target_reset', clientClose: 'rst' })
  t.match(near.closed()[0], { reason: 'target_reset', clientClose: 'rst' })

  const client2 = await connect(near.port)
  t.ok(await waitFor(() => serverSide !== undefined && serverSide !== null && far.listener.sessions.size === 1, 5000))
  const atServer = serverSide!
  const serverEnd = endOf(atServer)
  client2.resetAndDestroy()
  t.equal(await serverEnd, 'ECONNRESET', 'the server gets an RST')
  t.ok(await waitFor(() => near.closed().length === 2 && far.closed().length === 2, 5000))
  t.match(near.closed()[1], { reason: 'client_reset', targetClose: 'rst' })
  t.match(far.closed()[1], { reason: 'client_reset', targetClose: 'rst' })
})

t.test('the plain legs and the link have their keepalive: the far end\'s target leg reads back as set, the link\'s sockets run a keepalive timer', async (t) => {
  const { server, port } = await listen(echoThenBye)
  t.teardown(() => server.close())
  const { near, far } = await startPair(t, port)
  const client = await connect(near.port)
  client.write('x')
  t.ok(await waitFor(() => far.listener.sessions.size === 1 && [...far.listener.sessions][0]!.legHandle('target') !== undefined, 5000))
  const session = [...far.listener.sessions][0]!
  const target = session.legHandle('target')!
  if (far.sockets.native) t.same(far.sockets.check(target, far.listener.options.keepalive.target).differs, [], 'as configured')
  else t.ok(far.sockets.native === false, 'native helper not in use: keepalive set through Node')
  t.equal(session.legHandle('client'), undefined, 'the channel leg has no socket to set')
  // The link's own sockets, both ends (far: local port the pair port; near: peer port it).
  // ss shows one timer per socket: right after a frame (a heartbeat, an ACK) it may be the
  // retransmit timer, so each end is read until its keepalive timer shows (never, without it).
  const linkEnds = async () => (await tcpSockets(null, [`( sport = :${far.port} or dport = :${far.port} )`])).filter((s) => s.state === 'ESTAB')
  t.equal((await linkEnds()).length, 2, 'the link, seen from both ends')
  for (const end of ['far', 'near'] as const) {
    const seen: string[] = []
    const on = await waitFor(async () => {
      const s = (await linkEnds()).find((s) => (s.local.port === far.port) === (end === 'far'))
      seen.push(s === undefined ? 'gone' : (s.timer ?? 'none'))
      return /^keepalive,/.test(s?.timer ?? '')
    }, 3000, 100)
    t.ok(on, `the link's ${end} end has TCP keepalive on (timers seen: ${[...new Set(seen)].join(' | ')})`)
  }
  client.destroy()
})
