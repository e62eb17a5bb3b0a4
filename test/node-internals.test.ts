// The Node internals ka-proxy relies on (src/node-internals.ts), checked on real loopback
// sockets: if a Node release renames or changes any of them, this file fails on that line
// (CI runs it on every supported Node line), before users find the proxy on its fallback.

import t, { type Test } from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import {
  checkNodeInternals,
  handleFd,
  interceptAccept,
  missingFromAcceptedHandle,
  missingFromListenHandle,
  missingNodeInternals,
  socketFromHandle,
  stopReading,
  type AcceptedHandle,
} from '../src/node-internals.ts'
import tls from 'node:tls'
import { loadNative } from '../src/native.ts'

const load = loadNative()
if (!load.ok) throw new Error(`native helper must be built for these tests: ${load.reason}`)
const binding = load.binding

async function listening(t: Test): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => void server.close())
  return { server, port: (server.address() as net.AddressInfo).port }
}

t.test(`the start-up check finds everything on Node ${process.version}`, async (t) => {
  t.same(await checkNodeInternals(), [], 'nothing missing')
  t.same(missingNodeInternals(), [], 'and the native loader is told so')
})

t.test('_handle.fd of a server and of a socket is that socket', async (t) => {
  const { server, port } = await listening(t)
  const listenFd = handleFd(server)
  t.type(listenFd, 'number')
  binding.setKeepalive(listenFd!, 1, 37, 7, 3, 0)
  t.equal(binding.getKeepalive(listenFd!).idle, 37, 'options set through the listener fd read back')
  const client = net.connect(port, '127.0.0.1')
  t.teardown(() => void client.destroy())
  await once(client, 'connect')
  const fd = handleFd(client)
  t.type(fd, 'number')
  const [, localPort, , remotePort] = binding.socketAddresses(fd!)
  t.equal(localPort, client.localPort, "the fd's local port is the socket's")
  t.equal(remotePort, port, "the fd's peer is the server")
  client.destroy()
  t.equal(handleFd(client), undefined, 'no fd once destroyed')
})

t.test('_handle.onconnection hands over bare handles with fd, getpeername and close', async (t) => {
  const { server, port } = await listening(t)
  const got = new Promise<{ status: number; handle: AcceptedHandle | undefined }>((resolve) => {
    t.ok(interceptAccept(server, (status, handle) => resolve({ status, handle })), 'the hook is there')
  })
  let connections = 0
  server.on('connection', () => connections++)
  const client = net.connect(port, '127.0.0.1')
  t.teardown(() => void client.destroy())
  await once(client, 'connect')
  const { status, handle } = await got
  t.equal(status, 0)
  t.same(missingFromAcceptedHandle(handle, client.localPort!), [], 'fd, getpeername and close present')
  const [, , , peerPort] = binding.socketAddresses(handle!.fd)
  t.equal(peerPort, client.localPort, "the handle's fd is the accepted connection")
  const out: { address?: string; port?: number } = {}
  handle!.getpeername(out)
  t.same(out, { address: '127.0.0.1', port: client.localPort, family: 'IPv4' }, 'getpeername fills address, port, family')
  t.equal(binding.getKeepalive(handle!.fd).idle > 0, true, 'socket options work on it')
  t.equal(connections, 0, "no 'connection' event: no net.Socket was built")
  handle!.close()
  await once(client, 'end')
  t.pass('close() closes the connection')
})

t.test('new net.Socket({ handle }) carries bytes both ways', async (t) => {
  const { server, port } = await listening(t)
  const got = new Promise<AcceptedHandle | undefined>((resolve) => interceptAccept(server, (_s, h) => resolve(h)))
  const client = net.connect(port, '127.0.0.1')
  t.teardown(() => void client.destroy())
  await once(client, 'connect')
  const socket = socketFromHandle((await got)!, { allowHalfOpen: true })
  t.teardown(() => void socket.destroy())
  t.equal(socket.remotePort, client.localPort, 'remotePort read through the handle')
  socket.write('from the proxy')
  const [down] = (await once(client, 'data')) as [Buffer]
  t.equal(down.toString(), 'from the proxy')
  client.write('from the client')
  const [up] = (await once(socket, 'data')) as [Buffer]
  t.equal(up.toString(), 'from the client')
  client.end()
  await once(socket, 'end')
  t.ok(socket.writable, 'allowHalfOpen honoured: still writable after the peer FIN')
})

t.test('stopReading: a TLS socket reads no more, and what comes next is read on a duplicate of its descriptor', async (t) => {
  const psk = Buffer.alloc(32, 7)
  const options = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const
  const server = tls.createServer({ ...options, pskCallback: () => psk })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => void server.close())
  const accepted = once(server, 'secureConnection') as Promise<[tls.TLSSocket]>
  const client = tls.connect({ ...options, port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', checkServerIdentity: () => undefined, pskCallback: () => ({ psk, identity: 'x' }) })
  await once(client, 'secureConnect')
  const [far] = await accepted
  // Stopped from within its 'data' event, as the pair link does (Node reads on after a 'data').
  const stopped = new Promise<[Buffer, boolean]>((resolve) => far.once('data', (chunk: Buffer) => resolve([chunk, stopReading(far)])))
  client.write('in TLS')
  const [first, ok] = await stopped
  t.equal(String(first), 'in TLS')
  t.ok(ok, 'stopped')
  const read = far.bytesRead
  // Written past TLS, on the client's own descriptor, as the pair link's records are; the TLS
  // socket stays open meanwhile (the far end of a link writes its last TLS bytes then).
  const plain = new net.Socket({ fd: binding.dupFd(handleFd(client)!), readable: true, writable: true })
  t.teardown(() => {
    plain.destroy()
    client.destroy()
    far.destroy()
  })
  plain.write('plain bytes')
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(far.bytesRead, read, 'the TLS socket read none of them')
  const copy = new net.Socket({ fd: binding.dupFd(handleFd(far)!), readable: true, writable: true })
  t.teardown(() => copy.destroy())
  const [next] = (await once(copy, 'data', { signal: AbortSignal.timeout(2000) })) as [Buffer]
  t.equal(String(next), 'plain bytes', 'a duplicate of its descriptor reads them, whole')
})

t.test('a missing piece is named', async (t) => {
  const { server } = await listening(t)
  t.same(missingFromListenHandle(server), [], 'a real listener has everything')
  const handle = (server as unknown as { _handle: Record<string, unknown> })._handle
  const saved = handle.onconnection
  handle.onconnection = undefined
  t.same(missingFromListenHandle(server), ['net.Server._handle.onconnection'])
  handle.onconnection = saved
  t.same(missingFromAcceptedHandle(undefined, 1), ['accepted handle (onconnection gave none)'])
  const fake = { fd: -1, getpeername: (o: { port?: number }) => ((o.port = 2), 0), close: () => {} }
  t.same(missingFromAcceptedHandle(fake, 1), ['accepted handle .fd', 'accepted handle .getpeername (wrong or no port)'])
})
