// How sessions end when something goes wrong: resets cross over as resets, data being
// flushed still arrives, unreachable targets close the client promptly, nothing leaks. The
// whole suite runs once per transport (the native pump, Node streams).

import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import type { Socket } from 'node:net'
import { createInterface } from 'node:readline'
import { connect, endOf, listen, loopback, manualTarget, sleep, waitFor } from './helpers/net.ts'
import { drain, endSeen, fillPath } from './helpers/fill.ts'
import { payload } from './helpers/payload.ts'
import { startProxy, type TestProxy } from './helpers/proxy.ts'
import { startCliProxy } from './helpers/cli.ts'
import { relaySockets, socketsAt } from '../bench/lab/ss.ts'
import { eachTransport } from './helpers/transports.ts'

eachTransport((t, relay) => {
  async function proxyTo(t: Test, target: number | string, extra: Record<string, unknown> = {}): Promise<TestProxy> {
    const proxy = await startProxy({ target: typeof target === 'number' ? `127.0.0.1:${target}` : target, relay, ...extra })
    t.teardown(() => proxy.stop())
    t.equal(proxy.listener.relay, relay, `bytes move through ${relay === 'native' ? 'the native pump' : 'Node streams'}`)
    return proxy
  }

  t.test('target reset: the client is told with an RST, and the log says target_reset', async (t) => {
    const target = await manualTarget(t)
    const proxy = await proxyTo(t, target.port)
    const client = await connect(proxy.port)
    const server = await target.next()
    // Once a byte has crossed, the target leg is up: the reset is not a failed connect.
    client.write('x')
    await once(server, 'data')
    const clientEnd = endOf(client)
    server.resetAndDestroy()
    t.equal(await clientEnd, 'ECONNRESET', 'client sees a reset, not a normal end')
    const [line] = await proxy.closed()
    t.match(line, { reason: 'target_reset', leg: 'target', clientClose: 'rst', targetClose: 'failed', error: 'ECONNRESET' })
    t.same(await relaySockets(loopback(proxy.port), loopback(target.port)), [], 'no proxy socket left')
  })

  t.test('client reset: the target is told with an RST, and the log says client_reset', async (t) => {
    const target = await manualTarget(t)
    const proxy = await proxyTo(t, target.port)
    const client = await connect(proxy.port)
    const server = await target.next()
    const serverEnd = endOf(server)
    client.write('x')
    await waitFor(() => proxy.listener.sessions.values().next().value?.bytesToTarget === 1, 2000)
    client.resetAndDestroy()
    t.equal(await serverEnd, 'ECONNRESET')
    const [line] = await proxy.closed()
    t.match(line, { reason: 'client_reset', leg: 'client', targetClose: 'rst', clientClose: 'failed' })
    t.same(await relaySockets(loopback(proxy.port), loopback(target.port)), [], 'no proxy socket left')
  })

  t.test('target resets while data is still being flushed to a slow client: flush, then RST', async (t) => {
    const target = await manualTarget(t)
    const proxy = await proxyTo(t, target.port)
    const client = await connect(proxy.port)
    client.pause()
    const server = await target.next()
    const data = payload(8 << 20)
    server.write(data)
    await sleep(300)
    // The target's kernel drops what it has not sent yet; what the proxy took must all arrive.
    server.resetAndDestroy()
    // The proxy's target leg is paused by backpressure: the reset must be found all the same,
    // within the paused-leg check period, while the client still has not read.
    t.ok(await waitFor(() => proxy.listener.sessions.values().next().value?.reason === 'target_reset', 3000), 'reset found on a paused leg')
    let received = 0
    let intact = true
    client.on('data', (c: Buffer) => {
      intact &&= c.equals(data.subarray(received, received + c.length))
      received += c.length
    })
    const clientEnd = endSeen(client, proxy.sockets)
    const [line] = await proxy.closed()
    t.match(line, { reason: 'target_reset', leg: 'target', clientClose: 'rst' })
    t.equal(await clientEnd, 'ECONNRESET', 'the client leg ends with an RST after the data: the failure is not hidden')
    t.equal(received, line!.bytesToClient, 'every byte the proxy read from the target reaches the client')
    t.ok(received > 0 && intact, 'in order and exact')
  })

  t.test('target refused: the client is closed at once with an RST', async (t) => {
    const { server, port } = await listen(() => {})
    server.close()
    await once(server, 'close')
    const proxy = await proxyTo(t, port)
    const started = Date.now()
    const client = await connect(proxy.port)
    t.equal(await endOf(client), 'ECONNRESET')
    t.ok(Date.now() - started < 1000, `closed within 1 s (${Date.now() - started} ms)`)
    const [line] = await proxy.closed()
    t.match(line, { reason: 'connect_failed', leg: 'target', error: 'ECONNREFUSED', clientClose: 'rst' })
  })

  t.test('unresolvable target name: connect_failed, client closed', async (t) => {
    const bad = await proxyTo(t, 'no-such-host.invalid:5432')
    const client = await connect(bad.port)
    t.equal(await endOf(client), 'ECONNRESET')
    const [line] = await bad.closed()
    t.match(line, { reason: 'connect_failed', error: /ENOTFOUND|EAI_AGAIN/ })
  })

  t.test('connect timeout bounds a target that never answers', async (t) => {
    // A listener whose accept queue is full drops further SYNs: a silent target on loopback.
    const py = spawn('python3', ['-c', [
      'import socket, sys, time',
      's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)',
      'print(s.getsockname()[1], flush=True)',
      'time.sleep(60)',
    ].join('\n')])
    t.teardown(() => py.kill())
    const [portText] = (await once(py.stdout, 'data')) as [Buffer]
    const port = Number(portText.toString().trim())
    // Fill the accept queue.
    const fillers: Socket[] = []
    for (let i = 0; i < 4; i++) {
      const s = (await import('node:net')).connect(port, '127.0.0.1')
      s.on('error', () => {})
      fillers.push(s)
    }
    t.teardown(() => fillers.forEach((s) => s.destroy()))
    await sleep(200)
    const proxy = await proxyTo(t, port, { connectTimeout: 0.5 })
    const started = Date.now()
    const client = await connect(proxy.port)
    t.equal(await endOf(client), 'ECONNRESET')
    const elapsed = Date.now() - started
    t.ok(elapsed >= 450 && elapsed < 1500, `closed after the 0.5 s connect timeout (${elapsed} ms)`)
    const [line] = await proxy.closed()
    t.match(line, { reason: 'connect_timeout', leg: 'target' })
  })

  t.test('a half-closed session does not live forever', async (t) => {
    const target = await manualTarget(t)
    const proxy = await proxyTo(t, target.port, { halfCloseTimeout: 0.5 })
    const client = await connect(proxy.port)
    const server = await target.next()
    const serverEnd = endOf(server)
    client.end('bye')
    t.equal(await serverEnd, 'end', 'the client FIN reaches the target')
    // The target keeps its direction open and silent; the bound ends the session.
    const clientEnd = endOf(client)
    const [line] = await proxy.closed()
    t.match(line, { reason: 'half_close_timeout', bytesToTarget: 3, clientClose: 'rst', targetClose: 'rst' })
    t.ok((line!.durationMs as number) >= 450 && (line!.durationMs as number) < 2000, `after about 0.5 s (${line!.durationMs} ms)`)
    t.equal(await clientEnd, 'ECONNRESET', 'the client learns the session was cut, not finished')
    t.same(await relaySockets(loopback(proxy.port), loopback(target.port)), [], 'no proxy socket left')
  })

  t.test('one session failing leaves the others alone', async (t) => {
    const target = await manualTarget(t)
    const proxy = await proxyTo(t, target.port)
    const a = await connect(proxy.port)
    const serverA = await target.next()
    const b = await connect(proxy.port)
    const serverB = await target.next()
    const aEnd = endOf(a)
    serverA.resetAndDestroy()
    t.equal(await aEnd, 'ECONNRESET')
    await proxy.closed()
    const echoed = once(b, 'data')
    serverB.on('data', (c: Buffer) => serverB.write(c))
    b.write('still here')
    t.equal(((await echoed) as [Buffer])[0].toString(), 'still here', 'the other session still relays')
    t.equal(proxy.listener.sessions.size, 1)
    b.end()
    serverB.end()
    const [line] = await proxy.closed()
    t.equal(line!.reason, 'client_end')
  })

  t.test('stop: sessions get a grace period, then a FIN with reason shutdown', async (t) => {
    const target = await manualTarget(t)
    const proxy = await proxyTo(t, target.port)
    const client = await connect(proxy.port)
    const server = await target.next()
    const clientEnd = endOf(client)
    const serverEnd = endOf(server)
    const started = Date.now()
    await proxy.listener.stop(300)
    t.ok(Date.now() - started >= 280, 'waited for the grace period')
    t.equal(await clientEnd, 'end')
    t.equal(await serverEnd, 'end')
    const [line] = await proxy.closed()
    t.match(line, { reason: 'shutdown', clientClose: 'fin', targetClose: 'fin' })
    t.equal(proxy.listener.state, 'closed')
    await t.rejects(connect(proxy.port), { code: 'ECONNREFUSED' }, 'no longer accepting')
  })

  // A peer resets while the leg from it is paused by backpressure (its bytes acknowledged, waiting
  // in the proxy's receive queue). A direct connection would show the survivor every acknowledged
  // byte, then the reset; so must the proxy, in either direction.
  for (const dying of ['target', 'client'] as const) {
    const survivor = dying === 'target' ? 'client' : 'target'
    t.test(`the ${dying} resets while its leg is paused: every acknowledged byte reaches the ${survivor}, then an RST`, async (t) => {
      const target = await manualTarget(t)
      // A flush bound far above the wait below: the RST must follow the acknowledgement, not the bound.
      const proxy = await proxyTo(t, target.port, { flushTimeout: 30 })
      const client = await connect(proxy.port)
      const server = await target.next()
      const peers = { client, target: server }
      // The survivor does not read; it has sent something the dying side will not read.
      peers[survivor].pause()
      peers[survivor].write('a request that will not be read')
      const { data, acked } = await fillPath(peers[dying], proxy.sockets)
      const resetAt = performance.now()
      peers[dying].resetAndDestroy()
      await sleep(2000) // the survivor starts reading late
      const { received, end } = await drain(peers[survivor], proxy.sockets)
      const tookMs = performance.now() - resetAt
      const [line] = await proxy.closed()
      t.ok(tookMs < 15_000, `the RST came once the survivor had acknowledged every byte, not at the 30 s flush bound (${tookMs.toFixed(0)} ms)`)
      t.ok(received.length >= acked, `no acknowledged byte lost (${acked} acknowledged, ${received.length} delivered)`)
      t.ok(received.equals(data.subarray(0, received.length)), 'in order and exact')
      t.equal(end, 'ECONNRESET', 'then the reset, as a direct connection would show')
      t.match(line, {
        reason: `${dying}_reset`,
        leg: dying,
        [`${survivor}Close`]: 'rst',
        [`${dying}Close`]: 'failed',
        [dying === 'target' ? 'bytesToClient' : 'bytesToTarget']: received.length,
      })
      t.same(await relaySockets(loopback(proxy.port), loopback(target.port)), [], 'no proxy socket left')
    })
  }

  t.test('a survivor that never reads is reset after --flush-timeout, and the log says rst', async (t) => {
    const target = await manualTarget(t)
    const proxy = await proxyTo(t, target.port, { flushTimeout: 0.4 })
    const client = await connect(proxy.port)
    client.pause()
    const server = await target.next()
    server.write(payload(8 << 20))
    await sleep(300)
    const resetAt = performance.now()
    server.resetAndDestroy()
    const [line] = await proxy.closed()
    const afterReset = performance.now() - resetAt
    t.match(line, { reason: 'target_reset', leg: 'target', clientClose: 'rst', targetClose: 'failed' })
    // Found at once (EPOLLERR) or by the one-second paused-leg check, then 0.4 s of flushing.
    t.ok(afterReset >= 380 && afterReset < 2000, `closed about 0.4 s after the reset was found (${afterReset.toFixed(0)} ms after it)`)
    t.equal(await endSeen(client, proxy.sockets), 'ECONNRESET', 'the client is told the session was cut')
    t.same(await relaySockets(loopback(proxy.port), loopback(target.port)), [], 'no proxy socket left')
  })
})

// The native pump only, in a proxy process of its own that is frozen while the client ends:
// its FIN and its reset are both in the proxy's kernel before the pump looks. A read then
// returns the bytes, then the end of stream (the FIN came first), and the reset is only in
// SO_ERROR: taken for a half-close, the server would get a FIN for a session that was cut.
// Two layers catch it: the pump asks SO_ERROR at that end of stream (native/ka_pump.c,
// read_leg), and the session checks a leg's TCP state at every end of stream (deadReason).
// The server reads with plain blocking reads (Python): each says what the kernel has, where
// libuv (Node 22's) reports an RST behind unread bytes as an end of stream, and the kernel's
// state cannot tell an RST from a FIN that an RST followed.
t.test('native: a FIN then a reset from the client, seen in one turn: the bytes, then the reset reaches the server', async (t) => {
  const server = spawn('python3', ['-u', '-c', [
    'import errno, socket',
    's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)',
    'print(s.getsockname()[1])',
    'c, _ = s.accept()',
    'while True:',
    '    try:',
    '        d = c.recv(65536)',
    '    except OSError as e:',
    '        print(errno.errorcode.get(e.errno, e.errno)); break',
    '    print("data " + d.decode() if d else "end")',
    '    if not d: break',
  ].join('\n')])
  t.teardown(() => server.kill())
  const said: string[] = []
  createInterface({ input: server.stdout }).on('line', (l) => said.push(l))
  const saidAt = async (i: number): Promise<string | undefined> => (await waitFor(() => said.length > i, 10_000)) ? said[i] : undefined
  const proxy = await startCliProxy(['--target', `127.0.0.1:${await saidAt(0)}`])
  t.teardown(() => proxy.stop('SIGKILL'))
  t.match(await proxy.line((l) => l.msg === 'listening'), { relay: 'native' }, 'bytes move through the native pump')
  const client = await connect(proxy.port)
  client.write('x')
  t.equal(await saidAt(1), 'data x', 'the server reads the first byte')
  proxy.proc.kill('SIGSTOP')
  // Stopped for certain (state T) before the client acts: else it may still take the FIN alone.
  const stopped = (): boolean => readFileSync(`/proc/${proxy.proc.pid}/stat`, 'utf8').split(') ')[1]!.startsWith('T')
  t.ok(await waitFor(stopped, 2000), 'the proxy process is stopped')
  // The proxy's client leg as its kernel shows it: each step waits until the kernel has taken
  // the packet, not a fixed time (a loaded host may hold a loopback packet back for longer).
  const clientPort = client.localPort!
  const proxyLeg = async (): Promise<string | undefined> =>
    (await socketsAt(loopback(proxy.port))).find((s) => s.local.port === proxy.port && s.peer.port === clientPort)?.state
  try {
    client.end('abc')
    // The FIN is sent once Node has run the shutdown; the frozen proxy's kernel acknowledges it.
    t.ok(await waitFor(async () => (await proxyLeg()) === 'CLOSE-WAIT', 5000), 'the client\'s FIN is in the stopped proxy\'s kernel')
    client.resetAndDestroy()
    // A reset connection leaves the kernel's table (TCP state CLOSE): the reset is in too.
    t.ok(await waitFor(async () => (await proxyLeg()) === undefined, 5000), 'then its reset')
  } finally {
    proxy.proc.kill('SIGCONT')
  }
  const line = await proxy.line((l) => l.msg === 'session closed')
  t.ok(await waitFor(() => ['end', 'ECONNRESET'].includes(said.at(-1)!), 10_000), 'the server\'s reads end')
  // The bytes may come in one read or in several.
  t.equal(said.slice(2, -1).map((l) => l.replace(/^data /, '')).join(''), 'abc', 'what the client sent before its FIN arrived first')
  t.equal(said.at(-1), 'ECONNRESET', 'then the server sees a reset, not a normal end')
  t.match(line, { leg: 'client', targetClose: 'rst', clientClose: 'failed', bytesToTarget: 4 })
})
