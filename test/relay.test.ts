// Byte-exact relay both ways, with half-close in each direction, on random chunking; run
// with the native helper over each transport (its pump, Node streams), and on the setKeepAlive
// fallback (streams too).

import t from 'tap'
import { createHash } from 'node:crypto'
import type { Socket } from 'node:net'
import { connect, listen, readAll, waitFor } from './helpers/net.ts'
import { payload, writeChunked } from './helpers/payload.ts'
import { startProxy } from './helpers/proxy.ts'
import { SETUPS, TRANSPORTS } from './helpers/transports.ts'

const SIZES = [1, 1000, 65_537, 1 << 20, 16 << 20]
const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

for (const { name, native, relay } of SETUPS) {
  t.test(`relay (${name})`, async (t) => {
    // The target answers what it read with its own payload, in the order the test asks.
    let plan: { clientFirst: boolean; toClient: Buffer; received?: Promise<Buffer> } = {
      clientFirst: true,
      toClient: Buffer.alloc(0),
    }
    const { server, port } = await listen((s: Socket) => {
      const current = plan
      current.received = readAll(s)
      if (current.clientFirst) {
        // Client half-closes first; answer after its FIN, over the still-open direction.
        void current.received.then(() => writeChunked(s, current.toClient, { end: true }))
      } else {
        void writeChunked(s, current.toClient, { end: true })
      }
    })
    const proxy = await startProxy({ target: `127.0.0.1:${port}`, native, relay })
    t.teardown(async () => {
      await proxy.stop()
      server.close()
    })
    t.equal(proxy.sockets.native, native, 'the helper in use is the one asked for')
    t.equal(proxy.listener.relay, relay, `bytes move through ${relay === 'native' ? 'the native pump' : 'Node streams'}`)

    for (const clientFirst of [true, false]) {
      for (const size of SIZES) {
        const label = `${size} B each way, ${clientFirst ? 'client' : 'target'} half-closes first`
        const toTarget = payload(size)
        const toClient = payload(size + 3)
        plan = { clientFirst, toClient }
        const client = await connect(proxy.port)
        const fromTarget = readAll(client)
        if (clientFirst) {
          await writeChunked(client, toTarget, { end: true })
        } else {
          // Wait for the whole answer and its FIN before sending: the other direction stays open.
          await fromTarget
          await writeChunked(client, toTarget, { end: true })
        }
        const [got, gotByTarget] = await Promise.all([fromTarget, waitFor(() => plan.received !== undefined, 2000).then(() => plan.received!)])
        t.equal(digest(got), digest(toClient), `${label}: client got the target's bytes`)
        t.equal(gotByTarget.length, toTarget.length, `${label}: target got every byte`)
        t.equal(digest(gotByTarget), digest(toTarget), `${label}: target's bytes are exact`)
        const [line] = await proxy.closed()
        t.match(line, {
          reason: clientFirst ? 'client_end' : 'target_end',
          bytesToTarget: size,
          bytesToClient: size + 3,
          clientClose: 'fin',
          targetClose: 'fin',
        }, `${label}: one log line with reason and byte counts`)
      }
    }
    t.equal(proxy.listener.sessions.size, 0, 'no session left open')
  })
}

for (const relay of TRANSPORTS) {
  t.test(`bytes written just before the client closes still reach the target (${relay})`, async (t) => {
    // The tcpproxy TestBufferedClose case: write, then close at once, before the target leg is up.
    const gotByTarget: Promise<Buffer>[] = []
    const { server, port } = await listen((s) => gotByTarget.push(readAll(s).finally(() => s.end())))
    const proxy = await startProxy({ target: `127.0.0.1:${port}`, relay })
    t.teardown(async () => {
      await proxy.stop()
      server.close()
    })
    const client = await connect(proxy.port)
    client.end('hello, then goodbye')
    await waitFor(() => gotByTarget.length === 1, 2000)
    t.equal((await gotByTarget[0]!).toString(), 'hello, then goodbye')
    const [line] = await proxy.closed()
    t.match(line, { reason: 'client_end', bytesToTarget: 19 })
  })
}
