// Descriptor passing (native/ka_fdpass.c) on real sockets: a live TCP connection sent with a
// payload over a SOCK_SEQPACKET pair arrives as a working descriptor (bytes flow both ways
// through it, its keepalive settings read back); a message that does not fit is refused whole
// and leaks nothing; the wait is bounded; a closed peer reads as null; bad arguments throw.

import t from 'tap'
import { readdirSync } from 'node:fs'
import net from 'node:net'
import { once } from 'node:events'
import { loadNative } from '../src/native.ts'
import { SocketControl, fdOf } from '../src/socket-control.ts'
import { connect, listen, sleep } from './helpers/net.ts'

const load = loadNative()
if (!load.ok) throw new Error(`native helper must be built for these tests: ${load.reason}`)
const native = load.binding
const applier = new SocketControl()

const openFds = (): number => readdirSync('/proc/self/fd').length

/**
 * Open descriptors once what earlier tests closed is closed (a socket's close is asynchronous):
 * the count once it held still for 100 ms (a loaded machine can take longer than that to close).
 */
async function settledFds(): Promise<number> {
  let count = openFds()
  for (let i = 0; i < 50; i++) {
    await sleep(100)
    const now = openFds()
    if (now === count) return now
    count = now
  }
  return count
}

/** Resolves once the socket has closed (its descriptor with it). */
function closed(s: net.Socket): Promise<unknown> {
  return s.closed ? Promise.resolve() : once(s, 'close')
}

function pair(t: { teardown(fn: () => void): void }): [number, number] {
  const [a, b] = native.seqpacketPair()
  t.teardown(() => {
    for (const fd of [a, b]) {
      try {
        native.closeFd(fd)
      } catch {
        // closed by the test already
      }
    }
  })
  return [a, b]
}

t.test('a live TCP connection and its payload cross; the received descriptor relays both ways', async (t) => {
  let serverSide: net.Socket | undefined
  const { server, port } = await listen((s) => (serverSide = s))
  t.teardown(() => server.close())
  const client = await connect(port)
  t.teardown(() => client.destroy())
  applier.apply(client, { idle: 7, interval: 3, count: 4, userTimeout: 19 })
  const [a, b] = pair(t)
  const payload = Buffer.from(JSON.stringify({ v: 1, session: 42 }))
  native.sendFds(a, payload, [fdOf(client)], 1000)
  const got = native.recvFds(b, 65536, 1000)
  t.ok(got)
  t.same(JSON.parse(got!.payload.toString()), { v: 1, session: 42 }, 'payload whole')
  t.equal(got!.fds.length, 1)
  t.not(got!.fds[0], fdOf(client), 'a new descriptor for the same socket')
  // The sender lets go of its copy; the connection lives on in the received descriptor.
  client.destroy()
  const adopted = new net.Socket({ fd: got!.fds[0]!, readable: true, writable: true })
  t.teardown(() => adopted.destroy())
  t.same(applier.read(adopted), { enabled: true, idle: 7, interval: 3, count: 4, userTimeout: 19 }, 'keepalive settings travel with the socket')
  adopted.write('ping')
  const [atServer] = (await once(serverSide!, 'data')) as [Buffer]
  t.equal(atServer.toString(), 'ping', 'adopted -> peer')
  serverSide!.write('pong')
  const [atAdopted] = (await once(adopted, 'data')) as [Buffer]
  t.equal(atAdopted.toString(), 'pong', 'peer -> adopted')
  // Every descriptor of this test closed before the next counts them.
  adopted.destroy()
  serverSide!.destroy()
  await Promise.all([closed(adopted), closed(serverSide!), closed(client), new Promise((resolve) => server.close(resolve))])
})

t.test('several descriptors in one message, in order; 253 is the most', async (t) => {
  const [a, b] = pair(t)
  const before = await settledFds()
  const sent = Array.from({ length: 253 }, () => native.seqpacketPair()).flat()
  native.sendFds(a, Buffer.from('x'), sent.filter((_, i) => i % 2 === 0), 1000)
  const got = native.recvFds(b, 16, 1000)!
  t.equal(got.fds.length, 253)
  // Each received descriptor is the peer of the one kept at the odd index: check by a message.
  native.sendFds(sent[201]!, Buffer.from('order'), [], 1000)
  t.equal(native.recvFds(got.fds[100]!, 16, 1000)!.payload.toString(), 'order', 'descriptors arrive in the order sent')
  for (const fd of [...sent, ...got.fds]) native.closeFd(fd)
  t.equal(openFds(), before, 'nothing left open')
  t.throws(() => native.sendFds(a, Buffer.from('x'), Array.from({ length: 254 }, () => 0), 1000), { code: 'KA_NATIVE_ARG' })
})

t.test('a message that does not fit is refused whole; its descriptors are closed, not leaked', async (t) => {
  const [a, b] = pair(t)
  const [x, y] = native.seqpacketPair()
  const before = await settledFds()
  native.sendFds(a, Buffer.alloc(100, 1), [x, y], 1000)
  t.throws(() => native.recvFds(b, 50, 1000), { code: 'EMSGSIZE', syscall: 'recvmsg' }, 'payload cut off: refused')
  t.equal(openFds(), before, 'the two descriptors that arrived were closed')
  native.closeFd(x)
  native.closeFd(y)
})

t.test('the wait is bounded; a closed peer reads as null', async (t) => {
  const [a, b] = native.seqpacketPair()
  const started = performance.now()
  t.throws(() => native.recvFds(b, 16, 150), { code: 'ETIMEDOUT' })
  const waited = performance.now() - started
  t.ok(waited >= 140 && waited < 1000, `waited ${waited.toFixed(0)} ms for a 150 ms bound`)
  // A full socket: sending waits, then gives up at its bound too.
  const big = Buffer.alloc(60_000)
  t.throws(() => {
    for (let i = 0; i < 1000; i++) native.sendFds(a, big, [], 100)
  }, { code: 'ETIMEDOUT', syscall: 'sendmsg' })
  native.closeFd(a)
  while (native.recvFds(b, 65536, 100) !== null) {
    // drain what was queued before the close
  }
  t.equal(native.recvFds(b, 16, 100), null, 'peer closed: null')
  native.closeFd(b)
})

t.test('bad arguments throw, never crash', async (t) => {
  const [a] = pair(t)
  const n = native as unknown as Record<string, (...args: unknown[]) => unknown>
  t.throws(() => n.sendFds!(a, 'text', [], 100), { code: 'KA_NATIVE_ARG' })
  t.throws(() => n.sendFds!(a, Buffer.alloc(0), [], 100), { code: 'KA_NATIVE_ARG' })
  t.throws(() => n.sendFds!(a, Buffer.from('x'), [-1], 100), { code: 'KA_NATIVE_ARG' })
  t.throws(() => n.sendFds!(a, Buffer.from('x'), [1.5], 100), { code: 'KA_NATIVE_ARG' })
  t.throws(() => n.sendFds!(a, Buffer.from('x'), 3, 100), { code: 'KA_NATIVE_ARG' })
  t.throws(() => n.recvFds!(a, 0, 100), { code: 'KA_NATIVE_ARG' })
  t.throws(() => native.sendFds(999_999, Buffer.from('x'), [], 100), { code: 'EBADF' })
  t.throws(() => native.recvFds(999_999, 16, 100), { code: 'EBADF' })
  t.throws(() => native.closeFd(999_999), { code: 'EBADF' })
})

t.test('moveFd puts one descriptor in the place of another and closes the first', async (t) => {
  const [a, b] = native.seqpacketPair()
  const [c, d] = native.seqpacketPair()
  native.moveFd(a, c)
  native.sendFds(b, Buffer.from('moved'), [], 1000)
  t.equal(native.recvFds(c, 16, 1000)!.payload.toString(), 'moved', 'descriptor c is now the socket a was')
  t.throws(() => native.closeFd(a), { code: 'EBADF' }, 'a is closed')
  t.equal(native.recvFds(d, 16, 100), null, "c's old socket was closed: its peer reads the end")
  t.throws(() => native.moveFd(b, b), { code: 'KA_NATIVE_ARG' })
  t.throws(() => native.moveFd(999_999, b), { code: 'EBADF' })
  for (const fd of [b, c, d]) native.closeFd(fd)
})

t.test('dupFd gives a second descriptor of the same socket: closing the first leaves it open', async (t) => {
  const [a, b] = native.seqpacketPair()
  const copy = native.dupFd(a)
  t.not(copy, a)
  native.closeFd(a)
  native.sendFds(b, Buffer.from('still here'), [], 1000)
  t.equal(native.recvFds(copy, 16, 1000)!.payload.toString(), 'still here', 'the socket lives on through the copy')
  native.closeFd(copy)
  t.equal(native.recvFds(b, 16, 100), null, 'closing the copy, the last one, closes the socket')
  t.throws(() => native.dupFd(999_999), { code: 'EBADF' })
  native.closeFd(b)
})
