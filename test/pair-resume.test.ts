// Sessions that outlive their link: a link reset or blackholed mid-transfer is replaced and every
// byte still arrives, once, in order, with the plain legs none the wiser; past the resume window
// both plain legs are reset (pair_lost); a RESUME naming a session the far end does not know is
// refused, and garbage on the pair port harms no session.

import t, { type Test } from 'tap'
import type { Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { connect, endOf, listen, readAll, sleep, waitFor } from './helpers/net.ts'
import { payload } from './helpers/payload.ts'
import { pairSecretFile, Recorder, startPair, type PairEnd } from './helpers/pair.ts'
import { breakablePath, type BreakablePath } from './helpers/path.ts'
import { capturedLogger } from './helpers/proxy.ts'
import { LinkDialer } from '../src/pair/link.ts'
import { pairKeys } from '../src/pair/secret.ts'
import { FRAME, frameHeader, TOKEN_BYTES } from '../src/pair/protocol.ts'
import net from 'node:net'
import { sessionReport } from '../src/admin/server.ts'
import type { Leg } from '../src/transport/transport.ts'

function echo(s: Socket): void {
  s.on('error', () => {})
  s.pipe(s)
}

/** Writes `data` in 64 KiB pieces, calling `at(sentBytes)` after each, honouring backpressure; then ends. */
async function writeWith(socket: Socket, data: Buffer, at: (sent: number) => void): Promise<void> {
  for (let sent = 0; sent < data.length; sent += 65536) {
    if (!socket.write(data.subarray(sent, sent + 65536))) await new Promise((r) => socket.once('drain', r))
    at(sent + 65536)
  }
  socket.end()
}

/**
 * One session held open through a breakable path: the pair, the path, both plain ends. Relaying
 * at both ends, nothing unacknowledged: the server answered the client's first bytes, and the
 * answer reached the client (the far end acknowledges bytes as its socket takes them, before
 * the server can answer them; the near end learns the target is up from the acknowledgement
 * that goes before those).
 */
async function heldSession(t: Test, resumeWindow: number) {
  let serverSide: Socket | undefined
  const { server, port } = await listen((s) => {
    serverSide = s
    s.on('error', () => {})
    s.once('data', () => s.write('ready'))
  })
  t.teardown(() => server.close())
  let path: BreakablePath | undefined
  const { near, far } = await startPair(t, port, { resumeWindow, through: async (p) => (path = await breakablePath(p)).port })
  t.teardown(() => path!.close())
  const client = await connect(near.port)
  const ready = new Promise((resolve) => client.once('data', resolve))
  client.write('hello')
  t.equal(String(await ready), 'ready', 'the session relays')
  // Acknowledged both ways (an ACK may wait ACK_DELAY_MS): a cut then leaves no byte in doubt.
  const settled = (end: PairEnd, leg: Leg): boolean => [...end.listener.sessions].every((s) => s.queuedBytes(leg) === 0)
  t.ok(await waitFor(() => settled(near, 'target') && settled(far, 'client'), 2000), 'and its bytes are acknowledged')
  return { near, far, path: path!, client, serverSide: serverSide! }
}

/** A pair to an echo server through a breakable path, and a client of its near end. */
async function echoThroughPath(t: Test, pairHeartbeat: number) {
  const { server, port } = await listen(echo)
  t.teardown(() => server.close())
  let path: BreakablePath | undefined
  const { near, far } = await startPair(t, port, { pairHeartbeat, through: async (p) => (path = await breakablePath(p)).port })
  t.teardown(() => path!.close())
  return { near, far, path: path!, client: await connect(near.port) }
}

for (const fault of ['reset', 'blackhole'] as const) {
  t.test(`bulk through a link ${fault === 'reset' ? 'reset' : 'blackholed'} twice mid-transfer arrives byte-exact; the plain legs see nothing`, async (t) => {
    const { near, far, path, client } = await echoThroughPath(t, 0.1)
    const data = payload(12 * 1024 * 1024)
    const back = readAll(client)
    const cuts = new Set([3, 8].map((mb) => mb * 1024 * 1024))
    await writeWith(client, data, (sent) => {
      if (!cuts.has(sent)) return
      if (fault === 'reset') path.cut()
      else path.blackhole()
    })
    const got = await back
    t.equal(got.length, data.length, 'every byte')
    t.ok(got.equals(data), 'byte-exact, in order, nothing twice')
    t.ok(await waitFor(() => near.closed().length === 1 && far.closed().length === 1, 5000))
    for (const end of [near, far]) t.match(end.closed()[0], { reason: 'client_end', clientClose: 'fin', targetClose: 'fin', bytesToTarget: data.length, bytesToClient: data.length })
    t.ok(far.logs.filter((l) => l.msg === 'pair session resumed').length >= 1, 'resumed at the far end')
    t.ok(near.resumes >= 1 && far.resumes >= 1, `resumes counted at both ends (near ${near.resumes}, far ${far.resumes})`)
    t.ok(path.connections >= 3, `links made: ${path.connections}`)
  })
}

t.test('bytes read from the client while its RESUME waits for an answer go after what the far end lacks', async (t) => {
  const { near, far, path, client } = await echoThroughPath(t, 0.2)
  const data = payload(6 * 1024 * 1024)
  const back = readAll(client)
  // A steady writer (not one that fills the window while the link is down): some of its bytes
  // are read between a RESUME and its answer, on every one of the cuts.
  let cuts = 0
  for (let sent = 0; sent < data.length; sent += 4096) {
    if (!client.write(data.subarray(sent, sent + 4096))) await new Promise((r) => client.once('drain', r))
    if (sent % (256 * 1024) === 128 * 1024) {
      path.cut()
      cuts++
    }
    await new Promise((r) => setImmediate(r))
  }
  client.end()
  const got = await back
  t.equal(got.length, data.length, 'every byte')
  t.ok(got.equals(data), `byte-exact, in order, nothing twice, through ${cuts} cuts`)
  t.ok(await waitFor(() => near.closed().length === 1 && far.closed().length === 1, 5000))
  t.match(near.closed()[0], { reason: 'client_end', bytesToTarget: data.length, bytesToClient: data.length })
})

t.test('a response and its FIN sent while the link is blackholed, after the client\'s FIN, arrive once it resumes', async (t) => {
  let answer: (() => void) | undefined
  const { server, port } = await listen((s) => {
    s.on('error', () => {})
    s.on('data', () => {})
    s.on('end', () => (answer = () => s.end('response')))
  })
  t.teardown(() => server.close())
  let path: BreakablePath | undefined
  const { near, far } = await startPair(t, port, { pairHeartbeat: 0.1, through: async (p) => (path = await breakablePath(p)).port })
  t.teardown(() => path!.close())
  const client = await connect(near.port)
  const got = readAll(client)
  client.end('request')
  t.ok(await waitFor(() => answer !== undefined, 5000), 'the server has the request and its FIN')
  path!.blackhole()
  answer!()
  t.equal((await got).toString(), 'response', 'the response, then the FIN, after the link came back')
  t.ok(await waitFor(() => near.closed().length === 1 && far.closed().length === 1, 5000))
  for (const end of [near, far]) t.match(end.closed()[0], { reason: 'client_end', clientClose: 'fin', targetClose: 'fin', bytesToClient: 8 })
})

t.test('a client reset while the link is down reaches the server as a reset once a link is back, not at the window', async (t) => {
  const { near, far, path, client, serverSide } = await heldSession(t, 60)
  const serverEnd = endOf(serverSide)
  path.refuse(true)
  path.cut()
  t.ok(await waitFor(() => near.listener.pairLinksUp === 0, 2000), 'no link')
  client.resetAndDestroy()
  t.ok(await waitFor(() => near.closed().length === 1, 2000), 'the near end\'s session is over')
  t.match(near.closed()[0], { reason: 'client_reset' })
  path.refuse(false)
  t.equal(await serverEnd, 'ECONNRESET', 'the server gets its RST once a link is back (the window is 60 s)')
  t.ok(await waitFor(() => far.closed().length === 1, 2000))
  t.match(far.closed()[0], { reason: 'client_reset', targetClose: 'rst' })
})

t.test('a far end that drains still takes links: a session whose link was down when the drain began resumes and ends in order, well within the grace', async (t) => {
  const { near, far, path, client, serverSide } = await heldSession(t, 60)
  const serverEnd = endOf(serverSide)
  const clientEnd = endOf(client)
  path.refuse(true)
  path.cut()
  t.ok(await waitFor(() => near.listener.pairLinksUp === 0 && far.listener.pairLinksUp === 0, 2000), 'no link')
  const started = Date.now()
  const stopped = far.listener.stop(10_000)
  client.end()
  await sleep(300)
  path.refuse(false)
  const within = (p: Promise<string>): Promise<string> => Promise.race([p, new Promise<string>((resolve) => setTimeout(resolve, 5000, 'nothing within 5 s').unref())])
  // Not the FIN the far end sends its target when the grace is over (10 s).
  t.equal(await within(serverEnd), 'end', 'the client\'s FIN reaches the server over a link to the draining far end')
  serverSide.end()
  t.equal(await within(clientEnd), 'end', 'and the server\'s FIN the client')
  await stopped
  t.ok(Date.now() - started < 5000, `the far end stopped once its session ended, not at the grace (${Date.now() - started} ms)`)
  t.match(far.closed(), [{ reason: 'client_end', clientClose: 'fin', targetClose: 'fin' }])
  t.ok(await waitFor(() => near.closed().length === 1, 2000))
  t.match(near.closed()[0], { reason: 'client_end', clientClose: 'fin', targetClose: 'fin' })
})

t.test('a client that sent its first bytes and reset while its session waits for a link is let go at once; the target never sees it', async (t) => {
  let accepted = 0
  const { server, port } = await listen((s) => {
    accepted++
    s.on('error', () => {})
  })
  t.teardown(() => server.close())
  let path: BreakablePath | undefined
  const { near } = await startPair(t, port, { through: async (p) => (path = await breakablePath(p)).port })
  t.teardown(() => path!.close())
  t.ok(await waitFor(() => near.listener.pairLinksUp === 1, 5000), 'a link')
  path!.refuse(true)
  path!.cut()
  t.ok(await waitFor(() => near.listener.pairLinksUp === 0, 2000), 'no link')
  // Its first bytes are read and held for the far end: the socket is then not read until the
  // session relays, which is when a link comes back (the window is 60 s).
  const client = await connect(near.port)
  client.write('startup')
  t.ok(await waitFor(() => near.listener.sessions.size === 1, 2000), 'its session')
  await sleep(100)
  client.resetAndDestroy()
  t.ok(await waitFor(() => near.closed().length === 1, 2500), 'the session is over within the check of legs not read (1 s)')
  t.match(near.closed(), [{ reason: 'client_reset', clientClose: 'failed' }])
  t.equal(near.listener.sessions.size, 0)
  path!.refuse(false)
  t.ok(await waitFor(() => near.listener.pairLinksUp === 1, 5000), 'the link is back')
  await sleep(300)
  t.equal(accepted, 0, 'no OPEN went for it: the target never saw it')
})

t.test('past the resume window both plain legs are reset, one line each end, reason pair_lost', async (t) => {
  const { near, far, path, client, serverSide } = await heldSession(t, 0.6)
  const clientEnd = endOf(client)
  const serverEnd = endOf(serverSide)
  const session = [...near.listener.sessions][0]!
  t.match(sessionReport('near', session, near.sockets, performance.now()), { pair: { link: `127.0.0.1:${path.port}`, resumes: 0 } }, '/sessions: the link it travels on')
  t.equal(near.listener.pairLinksUp, 1)
  t.equal(far.listener.pairLinksUp, 1)
  const cutAt = performance.now()
  // The path goes away for good: the near end's attempts to come back are refused.
  path.close()
  t.ok(await waitFor(() => near.listener.pairLinksUp === 0, 2000), 'no link up at the near end')
  t.match(sessionReport('near', session, near.sockets, performance.now()), { pair: { link: null, resumes: 0 } }, '/sessions: waiting for a link')
  t.equal(await clientEnd, 'ECONNRESET', 'the client gets an RST')
  t.equal(await serverEnd, 'ECONNRESET', 'the server gets an RST')
  const ms = performance.now() - cutAt
  t.ok(ms >= 550 && ms < 3000, `after the window (${Math.round(ms)} ms)`)
  t.ok(await waitFor(() => near.closed().length === 1 && far.closed().length === 1, 5000))
  t.match(near.closed(), [{ reason: 'pair_lost', leg: 'target', clientClose: 'rst' }], 'one line at the near end')
  t.match(far.closed(), [{ reason: 'pair_lost', leg: 'client', targetClose: 'rst' }], 'one line at the far end')
  t.equal(near.listener.sessions.size + far.listener.sessions.size, 0, 'nothing left')
})

t.test('a RESUME with an unknown token, or the token of a session that ended, is refused; garbage harms no session', async (t) => {
  const { server, port } = await listen(echo)
  t.teardown(() => server.close())
  const secretFile = pairSecretFile()
  const { near, far } = await startPair(t, port, { secretFile })
  // A live session through the pair, checked again at the end.
  const client = await connect(near.port)
  const echoed = (text: string): Promise<string> => new Promise((resolve) => {
    client.once('data', (d: Buffer) => resolve(d.toString()))
    client.write(text)
  })
  t.equal(await echoed('before'), 'before')
  // An authenticated peer that plays the near end by hand.
  const { logger } = capturedLogger()
  const events = new Recorder()
  const dialer = new LinkDialer({ host: '127.0.0.1', port: far.port }, { keys: pairKeys(Buffer.from(readFileSync(secretFile, 'utf8').trim())), heartbeatMs: 200, logger }, events)
  dialer.start()
  t.teardown(() => dialer.stop())
  t.ok(await waitFor(() => dialer.link !== undefined, 5000))
  const link = dialer.link!
  const resume = (channel: number, token: Buffer): Buffer => {
    const b = frameHeader(FRAME.RESUME, channel, TOKEN_BYTES + 6, TOKEN_BYTES + 6)
    token.copy(b, 9)
    b.writeUIntBE(0, 9 + TOKEN_BYTES, 6)
    return b
  }
  link.send(resume(900, randomBytes(TOKEN_BYTES)))
  t.ok(await waitFor(() => events.control.some((c) => c.type === FRAME.RST && c.channel === 900), 5000), 'an unknown token: RST')
  // A session opened by hand, reset, then its token replayed.
  const token = randomBytes(TOKEN_BYTES)
  const open = frameHeader(FRAME.OPEN, 901, TOKEN_BYTES, TOKEN_BYTES)
  token.copy(open, 9)
  link.send(open)
  t.ok(await waitFor(() => events.control.some((c) => c.type === FRAME.ACK && c.channel === 901), 5000), 'the session opened (target connected)')
  link.send(frameHeader(FRAME.RST, 901, 0))
  t.ok(await waitFor(() => far.closed().length === 1, 5000), 'and ended by its reset')
  link.send(resume(902, token))
  t.ok(await waitFor(() => events.control.some((c) => c.type === FRAME.RST && c.channel === 902), 5000), 'its token replayed: RST')
  t.equal(far.logs.filter((l) => l.msg.startsWith('pair resume refused')).length, 2, 'one line per refusal')
  // Garbage on the pair port.
  const rogue = net.connect({ port: far.port, host: '127.0.0.1' })
  rogue.on('error', () => {})
  rogue.write(randomBytes(300))
  t.ok(await waitFor(() => far.logs.some((l) => l.reason === 'pair_not_pair'), 5000), 'garbage refused')
  rogue.destroy()
  await sleep(100)
  t.equal(await echoed('after'), 'after', 'the live session is unharmed')
  t.equal(near.closed().length, 0)
  t.equal(far.closed().length, 1, 'only the session reset on purpose ended')
  client.destroy()
})
