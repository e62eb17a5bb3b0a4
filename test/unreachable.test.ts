// A target that becomes unreachable under a live session: the router answers its packets with
// ICMP host unreachable (an nftables reject on loopback; root and nft needed, under CI=true
// their absence fails). The kernel gives up at the target leg's user timeout and reports
// EHOSTUNREACH: the client gets an RST, and the session's line says target_unreachable. On
// both transports.

import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { connect, endOf } from './helpers/net.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'
import { startProxy } from './helpers/proxy.ts'
import { TRANSPORTS } from './helpers/transports.ts'

const skip = missingPrerequisite((process.getuid?.() !== 0 || spawnSync('nft', ['--version']).status !== 0) &&
  'needs root and the nft command (apt-get install nftables) to reject packets with ICMP host unreachable')

/** Linux routes all of 127.0.0.0/8 to lo; no other test uses this address. */
const TARGET_HOST = '127.0.93.1'

/** Target leg keepalive: its user timeout (idle + interval × count) is 3 s. */
const KEEPALIVE = { idle: 1, interval: 1, count: 2 }

for (const relay of TRANSPORTS) {
  t.test(`target unreachable (ICMP host unreachable): RST to the client, reason target_unreachable (${relay})`, { skip }, async (t) => {
    const accepted: Socket[] = []
    // The target gets a loopback address of its own, so the reject rule below can match nothing
    // but this test's packets: other test files run at the same time on 127.0.0.1, and a port
    // number alone may be taken again by one of them once this target is closed.
    const target = await new Promise<{ server: Server; port: number }>((resolve, reject) => {
      const server = createServer({ allowHalfOpen: true }, (s) => {
        accepted.push(s)
        s.on('error', () => {})
        s.pipe(s)
      })
      server.once('error', reject)
      server.listen(0, TARGET_HOST, () => resolve({ server, port: (server.address() as AddressInfo).port }))
    })
    // The target never hears of the failure (every packet to it was rejected): close its side.
    t.teardown(() => {
      for (const s of accepted) s.destroy()
      target.server.close()
    })
    const proxy = await startProxy({ target: `${TARGET_HOST}:${target.port}`, relay, keepalive: { target: { idle: KEEPALIVE.idle, interval: KEEPALIVE.interval, count: KEEPALIVE.count } } })
    t.teardown(() => proxy.stop())
    const client = await connect(proxy.port)
    client.write('a')
    await once(client, 'data')

    const table = `ka_proxy_unreach_${process.pid}`
    const nft = (...args: string[]): void => void execFileSync('nft', args)
    nft('add', 'table', 'inet', table)
    t.teardown(() => nft('delete', 'table', 'inet', table))
    nft('add', 'chain', 'inet', table, 'out', '{ type filter hook output priority -10 ; }')
    nft('add', 'rule', 'inet', table, 'out', 'ip', 'daddr', TARGET_HOST, 'tcp', 'dport', String(target.port), 'reject', 'with', 'icmp', 'type', 'host-unreachable')
    const cutAt = Date.now()
    const clientEnd = endOf(client)
    client.write('b') // in flight to a target that cannot be reached
    t.equal(await clientEnd, 'ECONNRESET', 'the client is told with an RST')
    const [line] = await proxy.closed()
    const ms = Date.now() - cutAt
    t.match(line, { reason: 'target_unreachable', leg: 'target', error: 'EHOSTUNREACH', clientClose: 'rst', targetClose: 'failed' })
    const bound = (KEEPALIVE.idle + KEEPALIVE.interval * KEEPALIVE.count) * 1000 + 1500
    t.ok(ms <= bound, `within the target leg's user timeout + 1.5 s (${ms} ms, bound ${bound} ms)`)
  })
}
