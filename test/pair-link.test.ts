// The pair link on real loopback sockets: TLS 1.3 authenticated by the shared secret, frames
// both ways, heartbeats that keep an idle link alive, death after 3 silent heartbeats and a new
// link from a new source port, and refusals (wrong secret, not TLS) that harm no link.

import t, { type Test } from 'tap'
import net from 'node:net'
import tls from 'node:tls'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { capturedLogger, type LogLine } from './helpers/proxy.ts'
import { breakablePath } from './helpers/path.ts'
import { sleep, waitFor } from './helpers/net.ts'
import { LinkDialer, PairLinkServer, type LinkOptions } from '../src/pair/link.ts'
import { SocketControl } from '../src/socket-control.ts'
import { resolveOptions } from '../src/config/options.ts'
import { Recorder } from './helpers/pair.ts'
import { pairKeys } from '../src/pair/secret.ts'
import { ACK_DELAY_MS, FRAME, FrameReader, frameHeader, LINK_QUEUE_BYTES, MAX_DATA, offsetFrame, readOffset, WINDOW, type FrameType } from '../src/pair/protocol.ts'
import { Channel } from '../src/pair/channel.ts'
import { RefusalLog } from '../src/refusals.ts'

const SECRET = Buffer.from('0123456789abcdef0123456789abcdef')
const HB = 100

type Extra = Pick<LinkOptions, 'records' | 'keyUpdateBytes'>

async function farEnd(t: Test, secret = SECRET, tune?: LinkOptions['tune'], extra: Extra = {}) {
  const { logger, logs } = capturedLogger()
  const events = new Recorder()
  const server = new PairLinkServer({ keys: pairKeys(secret), heartbeatMs: HB, logger, tune, ...extra }, new RefusalLog(logger), events)
  const { port } = await server.listen('127.0.0.1', 0)
  t.teardown(async () => {
    for (const link of server.links) link.close()
    await server.close()
  })
  return { server, port, logs, events }
}

function nearEnd(t: Test, port: number, secret = SECRET, keys = pairKeys(secret), tune?: LinkOptions['tune'], extra: Extra = {}) {
  const { logger, logs } = capturedLogger()
  const events = new Recorder()
  const dialer = new LinkDialer({ host: '127.0.0.1', port }, { keys, heartbeatMs: HB, logger, tune, ...extra }, events)
  dialer.start()
  t.teardown(() => dialer.stop())
  return { dialer, logs, events }
}

const lines = (logs: LogLine[], msg: string): LogLine[] => logs.filter((l) => l.msg.startsWith(msg))

t.test('an authenticated link carries control and data frames both ways, byte-exact', async (t) => {
  const far = await farEnd(t)
  const near = nearEnd(t, far.port)
  t.ok(await waitFor(() => near.events.up.length === 1 && far.events.up.length === 1, 5000), 'up at both ends')
  const bulk = randomBytes(1_000_000)
  const nearLink = near.dialer.link!
  for (let at = 0; at < bulk.length; at += 65536) {
    const piece = bulk.subarray(at, at + 65536)
    nearLink.send(frameHeader(FRAME.DATA, 7, piece.length), piece)
  }
  nearLink.send(offsetFrame(FRAME.FIN, 7, bulk.length))
  const farLink = far.events.up[0]!
  farLink.send(offsetFrame(FRAME.ACK, 7, 12345))
  t.ok(await waitFor(() => far.events.control.length === 1 && near.events.control.length === 1, 5000))
  t.ok(far.events.bytes(7).equals(bulk), '1 MB of DATA arrives byte-exact, in order')
  t.equal(far.events.control[0]!.type, FRAME.FIN)
  t.equal(readOffset(far.events.control[0]!.payload), bulk.length, 'the FIN after it, with its offset')
  t.equal(near.events.control[0]!.type, FRAME.ACK)
  t.equal(readOffset(near.events.control[0]!.payload), 12345, 'and frames the other way')
})

t.test('many small frames in one turn (every session acknowledging at once) cross in records of a bounded number of pieces', async (t) => {
  const far = await farEnd(t)
  const near = nearEnd(t, far.port)
  t.ok(await waitFor(() => near.events.up.length === 1 && far.events.up.length === 1, 5000), 'up at both ends')
  const nearLink = near.dialer.link!
  // 10,000 sessions' ACKs and 1,000 sessions' 1-byte DATA, all in one turn of the event loop.
  for (let channel = 1; channel <= 10_000; channel++) nearLink.send(offsetFrame(FRAME.ACK, channel, channel))
  for (let channel = 1; channel <= 1000; channel++) nearLink.send(frameHeader(FRAME.DATA, channel, 1), Buffer.of(channel & 0xff))
  t.ok(await waitFor(() => far.events.control.length === 10_000 && far.events.arrivals.length === 1000, 10_000), 'every frame arrives')
  t.ok(far.events.control.every((c, i) => c.type === FRAME.ACK && c.channel === i + 1 && readOffset(c.payload) === i + 1), 'the ACKs in order, each its own')
  t.ok(far.events.arrivals.every(([channel], i) => channel === i + 1 && far.events.bytes(channel)[0] === (channel & 0xff)), 'the DATA in order, each its own byte')
  t.equal(near.events.down.length + far.events.down.length, 0, 'the link stays up')
})

t.test('frames leave TLS for sealed records when both ends can, and stay in TLS when either cannot; both carry frames', async (t) => {
  for (const [name, nearRecords, farRecords] of [
    ['both ends (a key update every 100 kB)', true, true],
    ['the near end without', false, true],
    ['the far end without', true, false],
  ] as const) {
    const far = await farEnd(t, SECRET, undefined, { records: farRecords, keyUpdateBytes: 100_000 })
    const near = nearEnd(t, far.port, SECRET, pairKeys(SECRET), undefined, { records: nearRecords, keyUpdateBytes: 100_000 })
    t.ok(await waitFor(() => near.events.up.length === 1 && far.events.up.length === 1, 5000), `${name}: up at both ends`)
    const records = nearRecords && farRecords
    const [nearLink, farLink] = [near.dialer.link!, far.events.up[0]!]
    t.equal(nearLink.records, records, `${name}: near end ${records ? 'in records' : 'in TLS'}`)
    t.equal(farLink.records, records, `${name}: far end ${records ? 'in records' : 'in TLS'}`)
    t.match(lines(far.logs, 'pair link up'), [{ records }], `${name}: the far end's 'pair link up' says which`)
    const up = randomBytes(1_000_000)
    const down = randomBytes(300_000)
    for (let at = 0; at < up.length; at += MAX_DATA) nearLink.send(frameHeader(FRAME.DATA, 1, Math.min(MAX_DATA, up.length - at)), up.subarray(at, at + MAX_DATA))
    for (let at = 0; at < down.length; at += MAX_DATA) farLink.send(frameHeader(FRAME.DATA, 2, Math.min(MAX_DATA, down.length - at)), down.subarray(at, at + MAX_DATA))
    t.ok(await waitFor(() => far.events.bytes(1).length === up.length && near.events.bytes(2).length === down.length, 5000), `${name}: both directions arrive`)
    t.ok(far.events.bytes(1).equals(up) && near.events.bytes(2).equals(down), `${name}: byte-exact (${records ? 'past 9 key updates near to far' : 'TLS'})`)
    t.equal(near.events.down.length + far.events.down.length, 0, `${name}: no link went down`)
    near.dialer.stop()
  }
})

/**
 * A path that, when armed, spoils the next piece the near end sends: `flip` flips one bit (at
 * byte 10: inside a record's sealed bytes), `replay` sends the piece twice.
 */
async function spoilingPath(t: Test, port: number) {
  let armed: 'flip' | 'replay' | undefined
  const server = net.createServer((client) => {
    const upstream = net.connect({ port, host: '127.0.0.1' })
    for (const s of [client, upstream]) s.on('error', () => {})
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    upstream.pipe(client)
    client.on('data', (chunk: Buffer) => {
      const mode = chunk.length > 10 ? armed : undefined
      armed = mode === undefined ? armed : undefined
      if (mode === 'flip') {
        const bad = Buffer.from(chunk)
        bad[10]! ^= 1
        upstream.write(bad)
      } else {
        upstream.write(chunk)
        if (mode === 'replay') upstream.write(chunk)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  return { port: (server.address() as net.AddressInfo).port, arm: (mode: 'flip' | 'replay') => (armed = mode) }
}

t.test('a record altered or replayed on the path ends the link at the end that reads it; a new link comes up', async (t) => {
  const far = await farEnd(t)
  const path = await spoilingPath(t, far.port)
  const near = nearEnd(t, path.port)
  t.ok(await waitFor(() => near.events.up.length === 1 && far.events.up.length === 1, 5000), 'up')
  t.ok(near.dialer.link!.records, 'in records')
  for (const [n, mode] of [[1, 'flip'], [2, 'replay']] as const) {
    path.arm(mode)
    near.dialer.link!.send(frameHeader(FRAME.DATA, n, 5), Buffer.from(`bad-${n}`))
    t.ok(await waitFor(() => far.events.down.length === n, 2000), `${mode}: the far end's link goes down`)
    t.match(far.events.down[n - 1], { reason: 'protocol' }, `${mode}: as a protocol error`)
    t.match(lines(far.logs, 'pair link down')[n - 1], { reason: 'protocol', detail: "a record's tag does not verify" }, `${mode}: one line says why`)
    t.ok(await waitFor(() => near.events.up.length === n + 1 && far.events.up.length === n + 1, 5000), `${mode}: the near end connects again`)
  }
  t.equal(far.events.bytes(1).length, 0, 'the altered frame never reached a session')
  t.ok(far.events.bytes(2).length <= 5, 'the replayed one reached it once at most (the original)')
  near.dialer.link!.send(frameHeader(FRAME.DATA, 3, 4), Buffer.from('good'))
  t.ok(await waitFor(() => far.events.bytes(3).toString() === 'good', 2000), 'the new link carries frames')
})

t.test('sessions take turns on a link: a small write waits behind the link\'s short queue and a frame of a bulk session, not behind all its credit', async (t) => {
  const far = await farEnd(t)
  const near = nearEnd(t, far.port)
  t.ok(await waitFor(() => near.events.up.length === 1 && far.events.up.length === 1, 5000), 'up at both ends')
  const link = near.dialer.link!
  const bulk = new Channel(1, randomBytes(16), link)
  const chat = new Channel(2, randomBytes(16), link)
  // All the credit a bulk session has, written at once (as a plain leg's reads would), then a query.
  const data = randomBytes(WINDOW)
  for (let at = 0; at < data.length; at += 65536) bulk.write(data.subarray(at, at + 65536))
  const query = Buffer.from('SELECT 1;')
  chat.write(query)
  bulk.fin()
  t.ok(await waitFor(() => far.events.bytes(1).length === data.length && far.events.bytes(2).length === query.length, 10_000), 'both arrive')
  t.ok(far.events.bytes(1).equals(data), `the bulk session's ${WINDOW} B arrive byte-exact, in order`)
  t.ok(far.events.bytes(2).equals(query), 'the query arrives whole')
  const first = far.events.arrivals.findIndex(([channel]) => channel === 2)
  const ahead = far.events.arrivals.slice(0, first).reduce((n, [, bytes]) => n + bytes, 0)
  t.ok(ahead <= LINK_QUEUE_BYTES + MAX_DATA, `bulk bytes that crossed before the query: ${ahead} of ${WINDOW} (at most the link's queue and a frame, ${LINK_QUEUE_BYTES + MAX_DATA}, not the bulk session's credit)`)
  t.ok(await waitFor(() => far.events.control.some((c) => c.type === FRAME.FIN && c.channel === 1), 5000), 'the bulk session\'s FIN comes after its bytes')
  t.equal(readOffset(far.events.control.find((c) => c.type === FRAME.FIN)!.payload), data.length, 'at its offset')
})

t.test('acknowledgements: a quiet channel acknowledges in the same turn, a busy one about once every ACK_DELAY_MS, and the last bytes within it', async (t) => {
  const far = await farEnd(t)
  const near = nearEnd(t, far.port)
  t.ok(await waitFor(() => near.events.up.length === 1 && far.events.up.length === 1, 5000), 'up at both ends')
  const c = new Channel(3, randomBytes(16), near.dialer.link!)
  const acks = (): number[] => far.events.control.filter((f) => f.type === FRAME.ACK && f.channel === 3).map((f) => readOffset(f.payload))
  const tick = (): Promise<void> => new Promise((resolve) => process.nextTick(resolve))
  c.onReceived(64)
  c.acknowledge()
  await tick()
  t.equal(c.ackedToPeer, 64, 'the first: at the end of the turn, not after a delay')
  const first = performance.now()
  c.onReceived(64)
  c.acknowledge()
  await tick()
  // The next, right after: it waits (unless this process was held up past the delay meanwhile).
  if (performance.now() - first < ACK_DELAY_MS) t.equal(c.ackedToPeer, 64, 'a second one right after waits')
  t.ok(await waitFor(() => c.ackedToPeer === 128, 1000), 'and goes within the delay')
  // A busy session: 64 bytes taken by the plain leg every millisecond for 300 ms (about 300 reads).
  const start = performance.now()
  let reads = 0
  while (performance.now() - start < 300) {
    c.onReceived(64)
    c.acknowledge()
    reads++
    await sleep(1)
  }
  const end = performance.now()
  const total = c.received
  t.ok(await waitFor(() => acks().at(-1) === total, 2000), 'the last bytes are acknowledged')
  const late = performance.now() - end
  const busy = acks().filter((offset) => offset > 128).length
  // A timer may fire up to a millisecond early by wall time (libuv's loop clock is read once a
  // turn): the bound allows for intervals of 0.8 x the delay, far below one ACK a read.
  const bound = Math.ceil((end - start) / (0.8 * ACK_DELAY_MS)) + 2
  t.ok(busy <= bound, `${reads} reads over ${Math.round(end - start)} ms sent ${busy} ACKs (at most ${bound}: about one per ${ACK_DELAY_MS} ms)`)
  t.ok(busy >= 2, `and not a single one at the end (${busy})`)
  t.ok(late < ACK_DELAY_MS + 500, `the last ACK arrived ${Math.round(late)} ms after the last read (the delay, ${ACK_DELAY_MS} ms, and a loaded machine's slack)`)
  t.same(acks(), [...acks()].sort((a, b) => a - b), 'offsets only grow')
  // Bulk: right after an ACK, a frame's worth goes at the end of the turn, not after the delay.
  await sleep(2 * ACK_DELAY_MS)
  c.onReceived(64)
  c.acknowledge()
  await tick()
  const acked = performance.now()
  t.equal(c.ackedToPeer, c.received, 'quiet again: at the end of the turn')
  c.onReceived(MAX_DATA)
  c.acknowledge()
  await tick()
  if (performance.now() - acked < ACK_DELAY_MS) t.equal(c.ackedToPeer, c.received, 'a frame\'s worth: at the end of the turn')
})

t.test('heartbeats keep an idle link alive; a silent one is dead after 3 heartbeats and comes back on a new port', async (t) => {
  const far = await farEnd(t)
  const path = await breakablePath(far.port)
  t.teardown(() => path.close())
  const near = nearEnd(t, path.port)
  t.ok(await waitFor(() => near.events.up.length === 1, 5000))
  const firstPort = near.dialer.link!.localPort
  await sleep(10 * HB)
  t.equal(near.events.down.length + far.events.down.length, 0, 'idle for 10 heartbeats, no data: still up at both ends')
  const cutAt = performance.now()
  path.blackhole()
  t.ok(await waitFor(() => near.events.down.length === 1 && far.events.down.length === 1, 20 * HB), 'both ends see it die')
  const detectedMs = performance.now() - cutAt
  // The last frame before the cut came up to 1.25 heartbeats earlier; death is 3 after it, seen within a quarter.
  t.ok(detectedMs >= 1.75 * HB && detectedMs < 5 * HB, `dead 3 heartbeats after the last frame (${Math.round(detectedMs)} ms after the cut)`)
  t.equal(near.events.down[0]!.reason, 'heartbeat_timeout')
  t.equal(far.events.down[0]!.reason, 'heartbeat_timeout')
  t.match(lines(near.logs, 'pair link down'), [{ reason: 'heartbeat_timeout', role: 'near' }], 'one line at the near end')
  t.match(lines(far.logs, 'pair link down'), [{ reason: 'heartbeat_timeout', role: 'far' }], 'one line at the far end')
  t.ok(await waitFor(() => near.events.up.length === 2, 20 * HB), 'the near end connects again')
  t.not(near.dialer.link!.localPort, firstPort, 'from a new source port')
  t.equal(path.connections, 2)
})

t.test('each link\'s socket gets its TCP keepalive at both ends, read back from the kernel', async (t) => {
  const sockets = new SocketControl({ native: true })
  const settings = resolveOptions({ listen: 0, target: '127.0.0.1:1', keepalive: { shared: { idle: 7, interval: 3, count: 4 } } }).keepalive.target
  const tuned: net.Socket[] = []
  const tune = (socket: net.Socket): void => {
    sockets.set(socket, settings)
    tuned.push(socket)
  }
  const far = await farEnd(t, SECRET, tune)
  const near = nearEnd(t, far.port, SECRET, pairKeys(SECRET), tune)
  t.ok(await waitFor(() => near.events.up.length === 1 && far.events.up.length === 1, 5000))
  t.equal(tuned.length, 2, 'one socket at each end')
  // Set on the TLS socket; the socket the link then uses (records: a plain one on a duplicate) keeps them.
  for (const link of [near.dialer.link!, far.events.up[0]!]) {
    if (sockets.native) t.same(sockets.check(link.socket, settings).differs, [], `as set (${link.role} end, records: ${link.records})`)
    else t.ok(link.socket.remotePort !== undefined, 'native helper not in use: set through Node')
  }
})

t.test('a wrong secret is refused with one line at each end; nothing else happens', async (t) => {
  const far = await farEnd(t)
  const near = nearEnd(t, far.port, Buffer.from('another secret, also 32 characters long'))
  t.ok(await waitFor(() => lines(near.logs, 'pair link failed').length >= 1 && lines(far.logs, 'pair link refused').length >= 1, 5000))
  near.dialer.stop()
  await sleep(200)
  t.match(lines(near.logs, 'pair link failed'), [{ reason: 'bad_secret' }], 'one line at the near end')
  t.match(lines(far.logs, 'pair link refused'), [{ reason: 'pair_bad_secret', msg: 'pair link refused: the peer does not hold the pair secret' }], 'one line at the far end')
  t.equal(near.events.up.length + far.events.up.length, 0, 'no link up at either end')
})

t.test('the hello proves the secret over this link: the right TLS key with a wrong proof is refused at both ends', async (t) => {
  const far = await farEnd(t)
  const keys = { psk: pairKeys(SECRET).psk, hello: pairKeys(Buffer.from('not the secret, but 32 characters long')).hello }
  const near = nearEnd(t, far.port, SECRET, keys)
  t.ok(await waitFor(() => lines(near.logs, 'pair link refused').length >= 1 && lines(far.logs, 'pair link refused').length >= 1, 5000))
  near.dialer.stop()
  await sleep(200)
  // Each end fails the other's proof, unless the other's reset (after failing ours) reaches it first.
  for (const [end, logs] of [['far', far.logs], ['near', near.logs]] as const) {
    t.equal(lines(logs, 'pair link refused').length, 1, `one line at the ${end} end`)
    t.match(lines(logs, 'pair link refused')[0], { reason: /^(bad_hello|closed|error)$/ })
  }
  t.ok([...far.logs, ...near.logs].some((l) => l.reason === 'bad_hello' && l.detail === 'HELLO proof does not verify'), 'the proof failed')
  t.equal(near.events.up.length + far.events.up.length, 0, 'no link up at either end')
})

t.test('a peer of another protocol version is refused with a line that names both versions', async (t) => {
  const far = await farEnd(t)
  const peer = tls.connect({
    port: far.port,
    host: '127.0.0.1',
    minVersion: 'TLSv1.3',
    checkServerIdentity: () => undefined,
    pskCallback: () => ({ psk: pairKeys(SECRET).psk, identity: 'ka-proxy-pair' }),
  })
  peer.on('error', () => {})
  t.teardown(() => peer.destroy())
  await once(peer, 'secureConnect')
  // Version 1's HELLO: version, role (near) and a 32-byte proof, no flags.
  peer.write(Buffer.concat([frameHeader(FRAME.HELLO, 0, 34), Buffer.of(1, 1), Buffer.alloc(32)]))
  t.ok(await waitFor(() => lines(far.logs, 'pair link refused').length === 1, 2000), 'refused')
  t.match(lines(far.logs, 'pair link refused')[0], { reason: 'bad_hello', detail: 'the peer speaks pair protocol 1, this end 2: both ends need the same ka-proxy version' }, 'one line names both')
  t.equal(far.events.up.length, 0)
})

t.test('garbage on the pair port is refused; a link already up is not harmed', async (t) => {
  const far = await farEnd(t)
  const near = nearEnd(t, far.port)
  t.ok(await waitFor(() => far.events.up.length === 1, 5000))
  const rogue = net.connect({ port: far.port, host: '127.0.0.1' })
  rogue.on('error', () => {})
  rogue.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  t.ok(await waitFor(() => lines(far.logs, 'pair link refused').length === 1, 5000))
  t.match(lines(far.logs, 'pair link refused'), [{ reason: 'pair_not_pair' }])
  rogue.destroy()
  near.dialer.link!.send(offsetFrame(FRAME.ACK, 1, 1))
  t.ok(await waitFor(() => far.events.control.length === 1, 2000), 'the link still carries frames')
  t.equal(near.events.down.length + far.events.down.length, 0, 'and never went down')
})

t.test('the frame reader: any split of the stream gives the same frames; a bad frame stops it', async (t) => {
  const stream = Buffer.concat([
    frameHeader(FRAME.DATA, 3, 5), Buffer.from('hello'),
    frameHeader(FRAME.HEARTBEAT, 0, 0),
    offsetFrame(FRAME.ACK, 3, 2 ** 40),
    frameHeader(FRAME.DATA, 4, 3), Buffer.from('abc'),
  ])
  for (const size of [1, 2, 7, 9, 10, stream.length]) {
    const got: string[] = []
    const reader = new FrameReader({
      onControl: (type, channel, payload) => got.push(`${type}/${channel}/${payload.length === 6 ? readOffset(payload) : ''}`),
      onData: (channel, piece) => got.push(`d${channel}:${piece}`),
      onProtocolError: (detail) => got.push(`error ${detail}`),
    })
    for (let at = 0; at < stream.length; at += size) reader.push(stream.subarray(at, at + size))
    const data = got.filter((g) => g.startsWith('d'))
    t.equal(data.map((d) => d.slice(3)).join(''), 'helloabc', `chunks of ${size}: data`)
    t.same(got.filter((g) => !g.startsWith('d')), [`${FRAME.HEARTBEAT}/0/`, `${FRAME.ACK}/3/${2 ** 40}`], `chunks of ${size}: control`)
  }
  for (const [name, bad] of [
    ['unknown type', frameHeader(99 as FrameType, 0, 0)],
    ['oversized data', frameHeader(FRAME.DATA, 1, 1 << 20)],
    ['short ack', frameHeader(FRAME.ACK, 1, 2)],
    ['empty data', frameHeader(FRAME.DATA, 1, 0)],
  ] as const) {
    const errors: string[] = []
    const reader = new FrameReader({ onControl: () => errors.push('frame'), onData: () => errors.push('data'), onProtocolError: (d) => errors.push(d) })
    reader.push(Buffer.concat([bad, Buffer.alloc(8), frameHeader(FRAME.HEARTBEAT, 0, 0)]))
    t.equal(errors.length, 1, `${name}: one protocol error, nothing after it`)
    t.notMatch(errors[0], /^(frame|data)$/, name)
  }
})
