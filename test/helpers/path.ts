// A path between two real TCP peers that a test can break the way networks break: a box in the
// middle that forwards bytes and can blackhole its current connections (a NAT that forgot them:
// nothing passes, nobody is told) or cut them (both sides reset). New connections pass again.

import net, { type Server, type Socket } from 'node:net'
import { once } from 'node:events'

export interface BreakablePath {
  port: number
  /** Connections made through the path so far. */
  connections: number
  /** Current connections stop passing anything, silently, both ways. */
  blackhole(): void
  /** Current connections are reset on both sides. */
  cut(): void
  /** While on, new connections are reset at once (the far side unreachable); off, they pass again. */
  refuse(on: boolean): void
  close(): void
}

export async function breakablePath(targetPort: number): Promise<BreakablePath> {
  const live = new Set<[Socket, Socket]>()
  /** Blackholed connections: open, passing nothing, destroyed when the path closes. */
  const swallowed = new Set<[Socket, Socket]>()
  let refusing = false
  const server: Server = net.createServer((client) => {
    if (refusing) {
      client.on('error', () => {})
      client.resetAndDestroy()
      return
    }
    const upstream = net.connect({ port: targetPort, host: '127.0.0.1' })
    const pair: [Socket, Socket] = [client, upstream]
    live.add(pair)
    path.connections++
    client.pipe(upstream)
    upstream.pipe(client)
    for (const s of pair) {
      s.on('error', () => {})
      s.on('close', () => {
        live.delete(pair)
        for (const o of pair) o.destroy()
      })
    }
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const path: BreakablePath = {
    port: (server.address() as net.AddressInfo).port,
    connections: 0,
    blackhole() {
      for (const pair of live) {
        swallowed.add(pair)
        for (const s of pair) {
          s.unpipe()
          // Read and drop: the kernel keeps acknowledging, as a box that swallows the flow would.
          s.removeAllListeners('data')
          s.on('data', () => {})
        }
      }
      live.clear()
    },
    cut() {
      for (const [a, b] of live) {
        a.resetAndDestroy()
        b.resetAndDestroy()
      }
      live.clear()
    },
    refuse(on) {
      refusing = on
    },
    close() {
      path.cut()
      for (const pair of swallowed) for (const s of pair) s.destroy()
      server.close()
    },
  }
  return path
}
