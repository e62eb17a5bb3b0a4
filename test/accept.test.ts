// Clients accepted by the native pump in its own epoll set (native/ka_accept.c): Node's server
// lets go of the listening socket, a burst of clients is taken in batches with each one's own
// address, and the stream relay still accepts through Node.

import net from 'node:net'
import t from 'tap'
import { socketsAt } from '../bench/lab/index.ts'
import { echoServer, loopback, readAll } from './helpers/net.ts'
import { startProxy } from './helpers/proxy.ts'

/** The descriptors of this process that hold the listening socket on `port` (ss lists one pid per descriptor). */
async function listeningHolders(port: number): Promise<number> {
  const listening = (await socketsAt(loopback(port))).filter((s) => s.state === 'LISTEN')
  return listening.flatMap((s) => s.pids).filter((pid) => pid === process.pid).length
}

t.test('the pump holds the listening socket alone: Node\'s server closed its copy', async (t) => {
  const proxy = await startProxy({ target: `127.0.0.1:${await echoServer(t)}` })
  t.teardown(() => proxy.stop())
  t.equal(proxy.listener.relay, 'native')
  t.equal(await listeningHolders(proxy.port), 1, 'one descriptor holds it')
  const c = net.connect(proxy.port, '127.0.0.1')
  const got = readAll(c)
  c.end('through the pump')
  t.equal((await got).toString(), 'through the pump')
  await proxy.stop()
  t.equal(await listeningHolders(proxy.port), 0, 'closed on stop')
})

t.test('a burst of 300 clients at once: every one relayed, each session naming its own client', async (t) => {
  const proxy = await startProxy({ target: `127.0.0.1:${await echoServer(t)}` })
  t.teardown(() => proxy.stop())
  const N = 300
  const ports = await Promise.all(Array.from({ length: N }, () => new Promise<number>((resolve, reject) => {
    const c = net.connect(proxy.port, '127.0.0.1')
    c.once('error', reject)
    c.once('connect', () => {
      const port = c.localPort!
      const got = readAll(c)
      c.end(String(port))
      got.then((b) => (b.toString() === String(port) ? resolve(port) : reject(new Error(`${port} got ${b.toString()}`))), reject)
    })
  })))
  const closed = await proxy.closed(N)
  t.equal(closed.length, N)
  t.same(new Set(closed.map((s) => s.client)), new Set(ports.map((p) => `127.0.0.1:${p}`)), 'each session names the client it relayed')
  t.ok(closed.every((s) => s.reason === 'client_end' && s.bytesToTarget === s.bytesToClient), 'every one ended cleanly, every byte back')
})

t.test('the stream relay accepts through Node', async (t) => {
  const proxy = await startProxy({ target: `127.0.0.1:${await echoServer(t)}`, relay: 'stream' })
  t.teardown(() => proxy.stop())
  t.equal(proxy.listener.relay, 'stream')
  t.equal(await listeningHolders(proxy.port), 1)
  const c = net.connect(proxy.port, '127.0.0.1')
  const got = readAll(c)
  c.end('through streams')
  t.equal((await got).toString(), 'through streams')
})
