// Keepalive on both legs of a live session, as the kernel reports it: getsockopt on the
// proxy's own sockets, and the keepalive timer `ss -tnoi` shows.

import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { Socket } from 'node:net'
import { createInterface } from 'node:readline'
import { SocketControl } from '../src/socket-control.ts'
import { connect, listen, loopback, waitFor } from './helpers/net.ts'
import { startProxy } from './helpers/proxy.ts'
import { relaySockets } from '../bench/lab/ss.ts'
import { resolveOptions, type RawOptions } from '../src/config/options.ts'
import type { TransportKind } from '../src/transport/transport.ts'
import { TRANSPORTS } from './helpers/transports.ts'

const reader = new SocketControl({ native: true })

const CASES: Array<{ name: string; flags: Omit<Partial<RawOptions>, 'target' | 'listen'>; client: object; target: object }> = [
  {
    name: 'defaults',
    flags: {},
    client: { idle: 60, interval: 10, count: 6, userTimeout: 120 },
    target: { idle: 60, interval: 10, count: 6, userTimeout: 120 },
  },
  {
    name: '--idle 5 --interval 2 --count 3',
    flags: { keepalive: { shared: { idle: 5, interval: 2, count: 3 } } },
    client: { idle: 5, interval: 2, count: 3, userTimeout: 11 },
    target: { idle: 5, interval: 2, count: 3, userTimeout: 11 },
  },
  {
    name: 'per-leg overrides and --user-timeout 0',
    flags: { keepalive: { shared: { idle: 20 }, client: { idle: 300, interval: 30, count: 5 }, target: { count: 2, userTimeout: 0 } } },
    client: { idle: 300, interval: 30, count: 5, userTimeout: 450 },
    target: { idle: 20, interval: 10, count: 2, userTimeout: 0 },
  },
]

async function liveSession(t: Test, flags: Omit<Partial<RawOptions>, 'target' | 'listen'>, native = true, relay?: TransportKind) {
  const accepted: Socket[] = []
  const { server, port } = await listen((s) => accepted.push(s))
  const proxy = await startProxy({ target: `127.0.0.1:${port}`, native, relay, ...flags })
  const client = await connect(proxy.port)
  await waitFor(() => accepted.length === 1, 2000)
  const session = [...proxy.listener.sessions][0]!
  await waitFor(() => session.legHandle('target') !== undefined, 2000)
  t.teardown(async () => {
    client.destroy()
    accepted.forEach((s) => s.destroy())
    await proxy.stop()
    server.close()
  })
  return { proxy, session, targetPort: port }
}

for (const c of CASES) {
  t.test(`both legs read back: ${c.name}`, async (t) => {
    const { proxy, session, targetPort } = await liveSession(t, c.flags)
    t.same(reader.read(session.legHandle('client')!), { enabled: true, ...c.client }, 'client leg (inherited from the listener)')
    t.same(reader.read(session.legHandle('target')!), { enabled: true, ...c.target }, 'target leg')
    const legs = await relaySockets(loopback(proxy.port), loopback(targetPort))
    const clientLeg = legs.filter((s) => s.local.port === proxy.port)
    const targetLeg = legs.filter((s) => s.peer.port === targetPort)
    t.equal(clientLeg.length, 1)
    t.equal(targetLeg.length, 1)
    t.match(clientLeg[0]?.timer, /^keepalive,/, 'ss shows a keepalive timer on the client leg')
    t.match(targetLeg[0]?.timer, /^keepalive,/, 'ss shows a keepalive timer on the target leg')
  })
}

// The other options every leg gets (src/socket-control.ts lists them): set on the listening
// socket and inherited by the client leg, set by each transport on the target leg it opens.
for (const relay of TRANSPORTS) {
  t.test(`TCP_NODELAY and SO_OOBINLINE read back on both legs, TCP_NOTSENT_LOWAT left to the system: ${relay} relay`, async (t) => {
    const live = await liveSession(t, {}, true, relay)
    t.equal(live.proxy.listener.relay, relay)
    t.same(reader.flags(live.session.legHandle('client')!), { noDelay: true, urgentInline: true, notSentLowat: 0 }, 'client leg (inherited from the listener)')
    t.same(reader.flags(live.session.legHandle('target')!), { noDelay: true, urgentInline: true, notSentLowat: 0 }, 'target leg')
  })
}

t.test('a reload while the target leg connects: the leg gets the new settings, not those it set out with', async (t) => {
  // The pump sets the target leg's options as it connects, from what the session gave it then.
  // A target whose accept queue is full (backlog 0, one connection waiting) drops the SYN, so
  // the connect hangs until the queue is emptied and the SYN is sent again (about 1 s later).
  const target = spawn('python3', ['-c', 'import socket, sys\ns = socket.socket()\ns.bind(("127.0.0.1", 0))\ns.listen(0)\nprint(s.getsockname()[1], flush=True)\nheld = []\nfor line in sys.stdin:\n    held.append(s.accept())'], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => target.kill())
  const [line] = (await once(createInterface({ input: target.stdout! }), 'line')) as [string]
  const targetPort = Number(line)
  const filler = await connect(targetPort)
  const before = { target: { idle: 20, interval: 5, count: 3 } }
  const after = { target: { idle: 40, interval: 7, count: 4 } }
  const proxy = await startProxy({ target: `127.0.0.1:${targetPort}`, keepalive: before })
  const client = await connect(proxy.port)
  t.teardown(async () => {
    client.destroy()
    filler.destroy()
    await proxy.stop()
  })
  await waitFor(() => proxy.listener.sessions.size === 1, 2000)
  const session = [...proxy.listener.sessions][0]!
  t.equal(session.legHandle('target'), undefined, 'the target leg is still connecting')
  proxy.listener.retune(resolveOptions({ listen: '127.0.0.1:0', target: `127.0.0.1:${targetPort}`, keepalive: after }), false)
  target.stdin!.write('accept\n')
  t.ok(await waitFor(() => session.legHandle('target') !== undefined, 5000), 'then it connects')
  t.same(reader.read(session.legHandle('target')!), { enabled: true, idle: 40, interval: 7, count: 4, userTimeout: 40 + 7 * 4 }, 'the settings of the reload')
})

t.test('check(): the one read-back comparison (reload, doctor) names each option not as wanted', async (t) => {
  const { session } = await liveSession(t, {})
  const leg = session.legHandle('target')!
  t.same(reader.check(leg, { idle: 60, interval: 10, count: 6, userTimeout: 120 }).differs, [], 'the defaults, as set')
  t.same(reader.check(leg, { idle: 61, interval: 10, count: 7, userTimeout: 120 }).differs, ['TCP_KEEPIDLE', 'TCP_KEEPCNT'])
  t.same(reader.check(leg, { idle: 60, interval: 11, count: 6, userTimeout: 12 }).differs, ['TCP_KEEPINTVL', 'TCP_USER_TIMEOUT'])
})

t.test('fallback: both legs get what setKeepAlive can do, per socket', async (t) => {
  const { session } = await liveSession(t, { keepalive: { shared: { idle: 9 } } }, false)
  const fallback = { enabled: true, idle: 9, interval: 1, count: 10, userTimeout: 0 }
  t.same(reader.read(session.legHandle('client')!), fallback, 'client leg')
  t.same(reader.read(session.legHandle('target')!), fallback, 'target leg')
  // TCP_NODELAY needs no helper; SO_OOBINLINE does (Node has no call for it).
  t.same(reader.flags(session.legHandle('client')!), { noDelay: true, urgentInline: false, notSentLowat: 0 }, 'client leg: TCP_NODELAY')
  t.same(reader.flags(session.legHandle('target')!), { noDelay: true, urgentInline: false, notSentLowat: 0 }, 'target leg: TCP_NODELAY')
})

t.test('keepalive probes really go out on an idle session', async (t) => {
  const { session } = await liveSession(t, { keepalive: { shared: { idle: 1, interval: 1, count: 5 } } })
  // An answered probe leaves no trace in TCP_INFO counters, but the ACK it draws does:
  // last_ack_recv is refreshed about every second although no data moves.
  await new Promise((r) => setTimeout(r, 2500))
  const info = reader.tcpInfo(session.legHandle('target')!)
  t.ok(info.lastDataRecvMs >= 2000, `no data for ${info.lastDataRecvMs} ms`)
  t.ok(info.lastAckRecvMs < 1500, `yet an ACK ${info.lastAckRecvMs} ms ago: probes answered`)
})
