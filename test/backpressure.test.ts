// Backpressure: a target that does not read must stop the proxy from reading the client, so
// the proxy's memory stays bounded whatever the client offers. The client offers the full
// 64 MiB, one chunk after each 'drain', as a well-behaved writer does; the writing stalls
// when nothing more is taken. Run on both transports (the native pump and Node streams).

import t from 'tap'
import { once } from 'node:events'
import type { Socket } from 'node:net'
import { connect, listen, waitFor } from './helpers/net.ts'
import { startProxy } from './helpers/proxy.ts'
import { TRANSPORTS } from './helpers/transports.ts'

const OFFERED = 64 << 20
const CHUNK = 64 << 10
/** No 'drain' for this long: the path takes nothing more. */
const STALL_MS = 1000
/** What the proxy may hold for the stalled target (its queue), and its memory growth. */
const MAX_QUEUED = 1 << 20
const MAX_RSS_GROWTH = 24 << 20

/** Writes up to `total` bytes, awaiting 'drain' after each refused write; returns what was taken. */
async function offer(socket: Socket, total: number): Promise<{ written: number; stalled: boolean }> {
  const chunk = Buffer.alloc(CHUNK, 0x61)
  let written = 0
  while (written < total) {
    written += chunk.length
    if (socket.write(chunk)) continue
    const drained = await Promise.race([
      once(socket, 'drain').then(() => true),
      new Promise<false>((r) => setTimeout(r, STALL_MS, false)),
    ])
    if (!drained) return { written, stalled: true }
  }
  return { written, stalled: false }
}

for (const relay of TRANSPORTS) {
  t.test(`a target that does not read: the proxy stops reading the client, queue and memory bounded (${relay})`, async (t) => {
    let target: Socket | undefined
    const { server, port } = await listen((s) => {
      target = s
      s.pause()
    })
    const proxy = await startProxy({ target: `127.0.0.1:${port}`, relay })
    t.teardown(async () => {
      await proxy.stop()
      server.close()
    })
    t.equal(proxy.listener.relay, relay)
    const client = await connect(proxy.port)
    await waitFor(() => proxy.listener.sessions.size === 1 && target !== undefined, 2000)
    const [session] = [...proxy.listener.sessions]
    const rssBefore = process.memoryUsage.rss()

    const { written, stalled } = await offer(client, OFFERED)
    const rssGrowth = process.memoryUsage.rss() - rssBefore
    const queued = session!.queuedBytes('target')
    const read = session!.bytesToTarget
    t.comment(`${relay}: offered ${written} B before stalling; the proxy read ${read} B, queues ${queued} B; RSS +${(rssGrowth / 2 ** 20).toFixed(1)} MiB`)
    t.ok(stalled, `the client's writes stall: nothing more is taken (after ${(written / 2 ** 20).toFixed(1)} of 64 MiB)`)
    t.ok(read < OFFERED / 2, `the proxy stopped reading the client (${read} B read)`)
    t.ok(queued <= MAX_QUEUED, `the proxy holds at most ${MAX_QUEUED} B for the stalled target (holds ${queued} B)`)
    t.ok(rssGrowth < MAX_RSS_GROWTH, `memory stays bounded (RSS grew ${(rssGrowth / 2 ** 20).toFixed(1)} MiB, bound ${MAX_RSS_GROWTH / 2 ** 20} MiB)`)

    // Once the target reads again, the rest of the 64 MiB flows, and every byte arrives.
    let total = 0
    target!.on('data', (c: Buffer) => (total += c.length))
    target!.resume()
    const rest = await offer(client, OFFERED - written)
    t.notOk(rest.stalled, 'the rest is taken once the target reads')
    client.end()
    await waitFor(() => total === OFFERED, 20_000)
    t.equal(total, OFFERED, 'all 64 MiB arrive, none lost')
    target!.end()
    const [line] = await proxy.closed()
    t.equal(line!.bytesToTarget, OFFERED)
  })
}
