// The native pump's own promises: a session holds no Node socket (the client's is handed over
// at accept, the target leg is the pump's), the summary still names the real client, and a
// bulk transfer on one session does not stall another session's small exchanges.

import t, { type Test } from 'tap'
import type { Socket } from 'node:net'
import { connect, listen, waitFor } from './helpers/net.ts'
import { startProxy } from './helpers/proxy.ts'

const SESSIONS = 40

function tcpHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length
}

async function echoTarget(t: Test) {
  const accepted: Socket[] = []
  const target = await listen((s) => {
    accepted.push(s)
    s.on('error', () => {})
    s.pipe(s)
  })
  const proxy = await startProxy({ target: `127.0.0.1:${target.port}` })
  t.teardown(async () => {
    await proxy.stop()
    target.server.close()
  })
  t.equal(proxy.listener.relay, 'native', 'the pump is in use')
  return { proxy, accepted }
}

t.test('a session holds no Node socket: only its two peers do', async (t) => {
  const { proxy, accepted } = await echoTarget(t)
  const before = tcpHandles()
  const clients: Socket[] = []
  for (let i = 0; i < SESSIONS; i++) clients.push(await connect(proxy.port))
  await waitFor(() => accepted.length === SESSIONS, 3000)
  // Each session proven end to end by an echo.
  await Promise.all(clients.map((c) => new Promise<void>((resolve) => { c.once('data', () => resolve()); c.write('x') })))
  t.equal(proxy.listener.sessions.size, SESSIONS)
  t.equal(tcpHandles() - before, 2 * SESSIONS, `${SESSIONS} clients and ${SESSIONS} target sockets, none of the proxy's`)
  const ports = new Set(clients.map((c) => `127.0.0.1:${c.localPort}`))
  for (const c of clients) c.end()
  const closed = await proxy.closed(SESSIONS)
  t.same(new Set(closed.map((s) => s.client)), ports, 'each summary names its own client address and port')
  t.ok(closed.every((s) => s.bytesToTarget === 1 && s.bytesToClient === 1), 'one byte each way, counted by the pump')
})

t.test('a bulk session does not stall a ping-pong on another', async (t) => {
  const { proxy } = await echoTarget(t)
  const bulk = await connect(proxy.port)
  bulk.on('data', () => {}) // read the echo back: a full loop through the proxy both ways
  const chunk = Buffer.alloc(1 << 20)
  let writing = true
  const pump = (): void => {
    while (writing && bulk.write(chunk));
  }
  bulk.on('drain', pump)
  pump()
  const ping = await connect(proxy.port)
  const times: number[] = []
  for (let i = 0; i < 50; i++) {
    const start = performance.now()
    await new Promise<void>((resolve) => { ping.once('data', () => resolve()); ping.write('p') })
    times.push(performance.now() - start)
  }
  writing = false
  const bulkBytes = proxy.listener.sessions.size > 0 ? [...proxy.listener.sessions][0]!.bytesToTarget : 0
  times.sort((a, b) => a - b)
  t.ok(bulkBytes > 8 << 20, `the bulk session moved ${(bulkBytes / 2 ** 20).toFixed(0)} MiB meanwhile`)
  t.ok(times[times.length - 1]! < 250, `every ping answered within 250 ms (slowest ${times[times.length - 1]!.toFixed(1)} ms, median ${times[25]!.toFixed(2)} ms)`)
  bulk.destroy()
  ping.destroy()
})
