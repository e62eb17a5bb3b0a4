// A peer that dies silently while the proxy is not reading its leg. The survivor has stopped
// reading, so the proxy holds bytes for it and stops reading the other leg (backpressure); then
// that other peer vanishes: nftables drops its packets both ways, no FIN, no RST, and the
// proxy's send queue to it is empty, so only keepalive can find the death (idle 1 s, interval
// 1 s, count 2, on that leg only: the survivor's leg keeps the default, as Linux also aborts
// zero-window probing of a peer that does not read once the user timeout has passed). The kernel reports it as an error on a socket nobody reads; the session must
// still end within the keepalive bound (plus the once-a-second paused-leg check), deliver every
// byte it took, and tell the survivor with an RST. Both directions, on both transports. Root and
// nft needed; under CI=true their absence fails.

import t, { type Test } from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import net, { type AddressInfo, type Socket } from 'node:net'
import { keepaliveBound } from '../bench/lab/index.ts'
import { relaySockets } from '../bench/lab/ss.ts'
import { drain, fillPath } from './helpers/fill.ts'
import { loopback, waitFor } from './helpers/net.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'
import { startProxy } from './helpers/proxy.ts'
import { TRANSPORTS } from './helpers/transports.ts'

const skip = missingPrerequisite((process.getuid?.() !== 0 || spawnSync('nft', ['--version']).status !== 0) &&
  'needs root and the nft command (apt-get install nftables) to make a peer vanish')

/**
 * Each case's dying peer has a loopback address of its own (Linux routes all of 127.0.0.0/8 to
 * lo), so its drop rules match nothing but that case's packets: other test files, and the other
 * cases of this one, run at the same time. The target listens on it; a dying client connects
 * from it.
 */
const vanishingHost = (n: number): string => `127.0.94.${n + 1}`

const KEEPALIVE = { idle: 1, interval: 1, count: 2 }

/** Keepalive's bound, the paused-leg check's period, and slack for a busy machine. */
const FOUND_WITHIN_MS = keepaliveBound(KEEPALIVE) * 1000 + 1000 + 1500

/** Drops every packet to and from `host`:`port` (as a source or a destination port) until the test ends. */
function vanish(t: Test, host: string, port: number): void {
  const table = `ka_proxy_vanish_${process.pid}_${host.replaceAll('.', '_')}`
  const nft = (...args: string[]): void => void execFileSync('nft', args)
  nft('add', 'table', 'inet', table)
  t.teardown(() => nft('delete', 'table', 'inet', table))
  nft('add', 'chain', 'inet', table, 'out', '{ type filter hook output priority -10 ; }')
  nft('add', 'rule', 'inet', table, 'out', 'ip', 'daddr', host, 'tcp', 'dport', String(port), 'drop')
  nft('add', 'rule', 'inet', table, 'out', 'ip', 'saddr', host, 'tcp', 'sport', String(port), 'drop')
}

// The cases wait on timers, not on the CPU: they run side by side.
t.jobs = 4

const cases = TRANSPORTS.flatMap((relay) => (['target', 'client'] as const).map((dying) => ({ relay, dying })))
for (const [n, { relay, dying }] of cases.entries()) {
  const vanishing = vanishingHost(n)
  const survivor = dying === 'target' ? 'client' : 'target'
  t.test(`the ${dying} vanishes while its leg is paused: found by keepalive, every byte taken reaches the ${survivor}, then an RST (${relay})`, { skip }, async (t) => {
    const accepted: Socket[] = []
    const target = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {})
      accepted.push(s)
    })
    const targetHost = dying === 'target' ? vanishing : '127.0.0.1'
    target.listen(0, targetHost)
    await once(target, 'listening')
    const targetPort = (target.address() as AddressInfo).port
    t.teardown(() => {
      for (const s of accepted) s.destroy()
      target.close()
    })
    const proxy = await startProxy({ target: `${targetHost}:${targetPort}`, relay, keepalive: { [dying]: KEEPALIVE } })
    t.teardown(() => proxy.stop())
    t.equal(proxy.listener.relay, relay)

    const client = net.connect({ port: proxy.port, host: '127.0.0.1', ...(dying === 'client' ? { localAddress: vanishing } : {}) })
    client.on('error', () => {})
    t.teardown(() => client.destroy())
    await once(client, 'connect')
    await waitFor(() => accepted.length === 1, 2000)
    const peers = { client, target: accepted[0]! }
    const session = proxy.listener.sessions.values().next().value!

    // The survivor stops reading: the proxy holds bytes for it and stops reading the dying leg.
    peers[survivor].pause()
    const { data, acked } = await fillPath(peers[dying], proxy.sockets)
    t.ok(session.queuedBytes(survivor) > 0, `the proxy holds bytes for the ${survivor}: the ${dying} leg is not being read`)

    const vanishedAt = performance.now()
    vanish(t, vanishing, dying === 'target' ? targetPort : peers.client.localPort!)
    const found = await waitFor(() => session.reason !== undefined, FOUND_WITHIN_MS)
    const ms = performance.now() - vanishedAt
    t.ok(found, `the death is found while the ${survivor} still does not read, within ${FOUND_WITHIN_MS} ms (${ms.toFixed(0)} ms)`)
    t.equal(session.reason, 'keepalive_timeout')

    const { received, end } = await drain(peers[survivor], proxy.sockets)
    const [line] = await proxy.closed()
    t.ok(received.length >= acked, `no acknowledged byte lost (${acked} acknowledged, ${received.length} delivered)`)
    t.ok(received.equals(data.subarray(0, received.length)), 'in order and exact')
    t.equal(end, 'ECONNRESET', `the ${survivor} is told with an RST after the bytes`)
    t.match(line, {
      reason: 'keepalive_timeout',
      leg: dying,
      error: 'ETIMEDOUT',
      [`${survivor}Close`]: 'rst',
      [`${dying}Close`]: 'failed',
      [dying === 'target' ? 'bytesToClient' : 'bytesToTarget']: received.length,
    })
    t.equal(proxy.logs.filter((l) => l.msg === 'session closed').length, 1, 'one session closed line')
    t.same(await relaySockets(loopback(proxy.port), { host: targetHost, port: targetPort }), [], 'no proxy socket left')
  })
}
