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

const notRoot = process.getuid?.() !== 0 && 'needs root: adds a name to /etc/hosts for the test'

t.test('a target name with several addresses: each is tried in turn, as net.connect does', { skip: notRoot }, async (t) => {
  const { readFileSync, writeFileSync } = await import('node:fs')
  const { promises: dns } = await import('node:dns')
  const name = `ka-proxy-two-addresses-${process.pid}.test`
  const hosts = readFileSync('/etc/hosts', 'utf8')
  // The server listens on 127.0.0.1 only: ::1 (sorted first by getaddrinfo) refuses.
  writeFileSync('/etc/hosts', `${hosts.trimEnd()}\n::1 ${name}\n127.0.0.1 ${name}\n`)
  t.teardown(() => writeFileSync('/etc/hosts', readFileSync('/etc/hosts', 'utf8').split('\n').filter((l) => !l.endsWith(` ${name}`)).join('\n')))
  const addresses = (await dns.lookup(name, { all: true })).map((a) => a.address)
  if (addresses.join() !== '::1,127.0.0.1') {
    t.pass(`skipped: the name must resolve to ::1, then 127.0.0.1 (no IPv6 loopback?); got ${addresses.join(', ')}`, { skip: true })
    return
  }
  const target = await listen((s) => s.pipe(s)) // on 127.0.0.1 only
  const proxy = await startProxy({ target: `${name}:${target.port}` })
  t.teardown(async () => {
    await proxy.stop()
    target.server.close()
  })
  const client = await connect(proxy.port)
  const echoed = await new Promise<string>((resolve) => { client.once('data', (d: Buffer) => resolve(d.toString())); client.write('ping') })
  t.equal(echoed, 'ping', 'relayed through the second address')
  client.end()
  const [closed] = await proxy.closed(1)
  t.equal(closed?.target, `127.0.0.1:${target.port}`, 'the summary names the address that answered')
  t.equal(closed?.reason, 'client_end')
})
