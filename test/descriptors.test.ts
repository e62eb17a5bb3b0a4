// "No socket of a finished session stays open", counted where it cannot hide: the proxy's own
// descriptors in /proc/<pid>/fd, against the count it had once listening. `ss` lists a socket
// only while the kernel's TCP tables hold it, so a socket that got an RST or timed out while
// its descriptor is still open escapes it; a descriptor count does not. The proxy runs as its
// own process, so the test's client and server sockets are not counted with it.

import t, { type Test } from 'tap'
import { once } from 'node:events'
import net from 'node:net'
import { socketDescriptors } from '../bench/lab/pids.ts'
import { SocketControl } from '../src/socket-control.ts'
import { startCliProxy, type RunningProxy } from './helpers/cli.ts'
import { endSeen } from './helpers/fill.ts'
import { connect, endOf, listen, manualTarget, waitFor } from './helpers/net.ts'
import { payload } from './helpers/payload.ts'

interface Counted {
  proxy: RunningProxy & { port: number }
  /** Socket descriptors the proxy holds beyond those it held once listening. */
  extra(): number
}

async function countedProxy(t: Test, targetPort: number, args: string[] = []): Promise<Counted> {
  const proxy = await startCliProxy(['--target', `127.0.0.1:${targetPort}`, ...args])
  t.teardown(() => proxy.stop('SIGKILL'))
  const pid = proxy.proc.pid!
  const baseline = socketDescriptors([pid])
  t.ok(baseline >= 1, `the listening socket is counted (${baseline} socket descriptor(s) once listening)`)
  return { proxy, extra: () => socketDescriptors([pid]) - baseline }
}

/** After the session's log line, the proxy's descriptors must come back to the baseline. */
async function noneLeft(t: Test, c: Counted, what: string): Promise<void> {
  await waitFor(() => c.extra() === 0, 2000)
  t.equal(c.extra(), 0, `${what}: no socket descriptor of the session left in the proxy`)
}

const closedLine = (proxy: RunningProxy, n: number) => proxy.line((l) => l.msg === 'session closed' && l.session === n)

for (const dies of ['target', 'client'] as const) {
  t.test(`${dies} resets: both of the session's descriptors are closed`, async (t) => {
    const target = await manualTarget(t)
    const c = await countedProxy(t, target.port)
    const client = await connect(c.proxy.port)
    const server = await target.next()
    client.write('x')
    await once(server, 'data')
    t.equal(c.extra(), 2, 'an open session holds two descriptors (client and target leg)')
    const [dying, survivor] = dies === 'target' ? [server, client] : [client, server]
    const survivorEnd = endOf(survivor)
    dying.resetAndDestroy()
    t.equal(await survivorEnd, 'ECONNRESET', 'the other peer is told with an RST')
    const other = dies === 'target' ? 'client' : 'target'
    t.match(await closedLine(c.proxy, 1), { reason: `${dies}_reset`, [`${dies}Close`]: 'failed', [`${other}Close`]: 'rst' })
    await noneLeft(t, c, `${dies}_reset`)
  })
}

t.test('target resets while data is flushed to a slow client: closed once flushed', async (t) => {
  const target = await manualTarget(t)
  const c = await countedProxy(t, target.port)
  const client = await connect(c.proxy.port)
  client.pause()
  const server = await target.next()
  server.write(payload(8 << 20))
  await new Promise((r) => setTimeout(r, 300))
  server.resetAndDestroy()
  const clientEnd = endSeen(client, new SocketControl())
  t.equal(await clientEnd, 'ECONNRESET', 'the client reads everything, then an RST (the failure is not hidden)')
  t.match(await closedLine(c.proxy, 1), { reason: 'target_reset', targetClose: 'failed', clientClose: 'rst' })
  await noneLeft(t, c, 'flushed after target_reset')
})

t.test('refused target, and a half-close that outlives its bound: nothing left', async (t) => {
  const { server, port: deadPort } = await listen(() => {})
  server.close()
  await once(server, 'close')
  const refusedProxy = await countedProxy(t, deadPort)
  // The proxy resets the client as soon as the target refuses: on a busy machine the RST can
  // arrive before the client's connect completes, and then the connect itself fails with it.
  t.equal(await endOf(net.connect({ port: refusedProxy.proxy.port, host: '127.0.0.1' })), 'ECONNRESET', 'the client is reset')
  t.match(await closedLine(refusedProxy.proxy, 1), { reason: 'connect_failed', error: 'ECONNREFUSED' })
  await noneLeft(t, refusedProxy, 'connect_failed')

  const target = await manualTarget(t)
  const c = await countedProxy(t, target.port, ['--half-close-timeout', '0.3'])
  const client = await connect(c.proxy.port)
  const server2 = await target.next()
  const serverEnd = endOf(server2)
  client.end('bye')
  t.equal(await serverEnd, 'end')
  const clientEnd = endOf(client)
  t.match(await closedLine(c.proxy, 1), { reason: 'half_close_timeout', clientClose: 'rst', targetClose: 'rst' })
  t.equal(await clientEnd, 'ECONNRESET')
  await noneLeft(t, c, 'half_close_timeout')
})
