// `ka-proxy probe-server --listen [host:]port`: a tiny echo responder to run next to the
// server, so any path can be measured without credentials. It never closes an idle
// connection and never sends keepalive probes (either would hide the path's own timeout):
// whatever ends a connection is on the path.

import net, { type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { formatEndpoint, type Endpoint } from '../config/endpoint.ts'
import { ListenError } from '../errors.ts'
import { noDelay } from '../socket-control.ts'

/** Connections held at once: enough for any probe, bounded for a port that may be reachable by anyone. */
const MAX_CONNECTIONS = 1024

function onData(this: Socket, chunk: Buffer): void {
  // Backpressure: a peer that sends without reading is paused, not buffered without end.
  if (!this.write(chunk)) this.pause()
}

function onDrain(this: Socket): void {
  this.resume()
}

function onError(): void {
  // A reset or a dead path: the probe on the other end judges it, nothing to do here.
}

/** The responder and its open connections (closed with it). */
export interface ProbeServer {
  server: Server
  close(): void
}

export async function startProbeServer(listen: Endpoint): Promise<ProbeServer> {
  const sockets = new Set<Socket>()
  const server = net.createServer((socket) => {
    noDelay(socket)
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    socket.on('data', onData)
    socket.on('drain', onDrain)
    socket.on('error', onError)
    // A half-close is answered with one: the peer is done, so is the echo.
    socket.on('end', () => socket.end())
  })
  server.maxConnections = MAX_CONNECTIONS
  server.listen(listen.port, listen.host)
  try {
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err))])
  } catch (err) {
    throw new ListenError(formatEndpoint(listen.host, listen.port), err as NodeJS.ErrnoException)
  }
  return {
    server,
    close() {
      server.close()
      for (const socket of sockets) socket.destroy()
    },
  }
}

/** Runs until SIGINT or SIGTERM; says where it listens on stdout. */
export async function runProbeServer(listen: Endpoint, write: (text: string) => void): Promise<number> {
  const responder = await startProbeServer(listen)
  const { address, port } = responder.server.address() as net.AddressInfo
  write(`ka-proxy probe-server: echoing on ${formatEndpoint(address, port)}; probe with: ka-proxy probe --target <this host>:${port}\n`)
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve)
    process.once('SIGTERM', resolve)
  })
  responder.close()
  return 0
}
