// Sessions over a pair link, end to end on loopback: client -> near ka-proxy -> TLS link -> far
// ka-proxy -> server. Bytes arrive byte-exact both ways, a FIN crosses as a FIN, a reset as a
// reset, and the plain legs get their keepalive as any session's.

import t from 'tap'
import type { Socket } from 'node:net'
import { connect, endOf, listen, loopback, readAll, sleep, waitFor } from './helpers/net.ts'
import { payload, writeChunked } from './helpers/payload.ts'
import { startPair } from './helpers/pair.ts'
import { socketsAt } from '../bench/lab/ss.ts'
import { loadNative } from '../src/native.ts'
import { connectedOnPort } from './helpers/fds.ts'
import { LINK_NOTSENT_LOWAT } from '../src/pair/protocol.ts'
import { fdOf } from '../src/socket-control.ts'

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
  const linkEnds = async () => (await socketsAt(loopback(far.port))).filter((s) => s.state === 'ESTAB')
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
  // What the link's kernel send queue may hold unsent, read back at both ends; a plain leg keeps the system's default.
  const native = loadNative()
  if (native.ok) {
    const link = connectedOnPort(native.binding, far.port)
    t.equal(link.length, 2, 'the link\'s two sockets, found by descriptor')
    t.same(link.map((fd) => native.binding.getSocketFlags(fd).notSentLowat), [LINK_NOTSENT_LOWAT, LINK_NOTSENT_LOWAT], `TCP_NOTSENT_LOWAT ${LINK_NOTSENT_LOWAT} at both ends of the link`)
    t.equal(native.binding.getSocketFlags(fdOf(target)).notSentLowat, 0, 'the target leg: not set')
  } else {
    t.ok(far.sockets.native === false, 'native helper not in use: TCP_NOTSENT_LOWAT not set')
  }
  client.destroy()
})

t.test('a session whose server stops reading does not stall another on the same link: each has its own credit, the link is never paused for one', async (t) => {
  // The server echoes a session that starts with PING; it never reads any other.
  let stuckServerFound: (s: Socket) => void = () => {}
  const stuckServer = new Promise<Socket>((resolve) => (stuckServerFound = resolve))
  const { server, port } = await listen((s) => {
    s.on('error', () => {})
    s.once('data', (first) => {
      if (first.subarray(0, 4).toString() !== 'PING') {
        s.pause()
        stuckServerFound(s)
        return
      }
      s.write(first)
      s.on('data', (d) => s.write(d))
    })
  })
  t.teardown(() => server.close())
  const { near, far } = await startPair(t, port)
  const stuck = await connect(near.port)
  stuck.on('error', () => {})
  // Far more than its credit, the server's and every buffer on the way can take.
  const big = payload(64 << 20)
  for (let at = 0; at < big.length; at += 1 << 20) stuck.write(big.subarray(at, at + (1 << 20)))
  await sleep(1000)
  t.ok(stuck.writableLength > 0, `the stuck session's client is held back (${(stuck.writableLength / 2 ** 20).toFixed(0)} of 64 MiB not taken)`)
  const chat = await connect(near.port)
  chat.on('error', () => {})
  const times: number[] = []
  for (let i = 0; i < 20; i++) {
    const ping = Buffer.from(`PING ${String(i).padStart(4, '0')}`)
    const started = performance.now()
    chat.write(ping)
    const got = await new Promise<Buffer>((resolve) => chat.once('data', resolve))
    times.push(performance.now() - started)
    if (!got.equals(ping)) t.fail(`round trip ${i}: got ${got.toString()}`)
  }
  t.ok(Math.max(...times) < 1000, `20 round trips beside it, each well within a second (slowest ${Math.max(...times).toFixed(1)} ms)`)
  // A reset of the stuck client does not wait behind the bytes its session could not send: it
  // reaches the server at once, as a reset.
  const stuckServerEnd = endOf(await stuckServer)
  stuck.resetAndDestroy()
  t.match(await stuckServerEnd, /^(ECONNRESET|EPIPE)$/, 'the stuck session\'s server gets the reset')
  t.ok(await waitFor(() => far.closed().some((l) => l.reason === 'client_reset'), 5000), 'and the far end closes it: client_reset')
  chat.resetAndDestroy()
})

t.test('a server that reads in fits and starts gets every byte in order, while another session streams beside it', async (t) => {
  // The far end opens the link's records into one buffer it reuses; what the slow server's
  // socket still queues (its kernel buffers full) must not be written over by the next records,
  // which the other session keeps coming.
  const received = new Map<string, Buffer[]>()
  const { server, port } = await listen((s) => {
    s.on('error', () => {})
    const pieces: Buffer[] = []
    s.once('data', (first) => received.set(first.subarray(0, 4).toString(), pieces))
    s.on('data', (d) => {
      pieces.push(d)
      if (received.get('SLOW') !== pieces) return
      // SLOW: a read, then nothing for 20 ms.
      s.pause()
      setTimeout(() => s.resume(), 20)
    })
    s.on('end', () => s.end())
  })
  t.teardown(() => server.close())
  const { near } = await startPair(t, port)
  const streams = [
    { name: 'SLOW', bytes: 6 << 20 },
    { name: 'FAST', bytes: 128 << 20 },
  ].map(({ name, bytes }) => ({ name, data: Buffer.concat([Buffer.from(name), payload(bytes)]) }))
  const ended = await Promise.all(streams.map(async ({ data }) => {
    const client = await connect(near.port)
    client.on('error', () => {})
    const end = new Promise<void>((resolve) => client.once('end', resolve))
    client.resume()
    void writeChunked(client, data, { end: true })
    return end
  }))
  await Promise.all(ended)
  for (const { name, data } of streams) {
    const got = Buffer.concat(received.get(name) ?? [])
    t.equal(got.length, data.length, `${name}: every byte`)
    t.ok(got.equals(data), `${name}: byte-exact, in order`)
  }
})
