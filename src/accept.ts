// How accepted connections reach the listener. With the native pump the pump accepts them
// itself, in its own epoll set (native/ka_accept.c, through Transports.acceptOn): a client is a
// bare descriptor with the peer's address (PumpAccepted), no libuv handle or JavaScript object of
// Node's. Otherwise Node accepts; a client's net.Socket would be built only to be closed at once
// where a transport takes handles, so the listener takes the accepted handle itself, through the
// server handle's `onconnection` hook (src/node-internals.ts, with every other reach into Node
// internals). Where the hook is missing, it falls back to the 'connection' event.

import net, { type Server, type Socket } from 'node:net'
import { formatPeer } from './config/endpoint.ts'
import { errnoName } from './errors.ts'
import { interceptAccept, socketFromHandle, type AcceptedHandle, type SocketOptions } from './node-internals.ts'
import { loadNative } from './native.ts'

export type { AcceptedHandle }

/** A client the pump accepted: its descriptor (the pump's until a relay takes it) and address. */
export interface PumpAccepted {
  readonly pump: true
  readonly fd: number
  readonly address: string
  readonly port: number
}

export type Accepted = Socket | AcceptedHandle | PumpAccepted

export function isSocket(client: Accepted): client is Socket {
  return client instanceof net.Socket
}

export function isPumpAccepted(client: Accepted): client is PumpAccepted {
  return (client as Partial<PumpAccepted>).pump === true
}

/**
 * Calls `take` for each accepted connection. `raw`: hand over bare handles where Node allows
 * it (the caller then owns them: see `closeAccepted`, `socketOf`).
 */
export function onAccepted(server: Server, raw: boolean, take: (client: Accepted) => void, onError: (err: Error) => void): void {
  server.on('error', onError)
  const hooked = raw && interceptAccept(server, (status: number, client: AcceptedHandle | undefined): void => {
    if (status < 0 || client === undefined) {
      // EMFILE and the like: this accept failed, the listener goes on.
      onError(Object.assign(new Error(`accept: ${status}`), { code: errnoName(status) }))
      return
    }
    take(client)
  })
  if (!hooked) server.on('connection', take)
}

/**
 * A net.Socket for a client Node accepted, wrapping a bare handle (for the paths that need one:
 * transports without acceptOn, which only ever get such clients); `options` apply to such a
 * handle's socket, not to a client that came as a socket already.
 */
export function socketOf(client: Accepted, options: SocketOptions = {}): Socket {
  if (isPumpAccepted(client)) throw new Error('a client the pump accepted has no Node socket')
  return isSocket(client) ? client : socketFromHandle(client, { allowHalfOpen: true, ...options })
}

/** Turns a client away with an RST, so it fails fast instead of waiting. */
export function resetAccepted(client: Accepted): void {
  if (isPumpAccepted(client)) {
    const load = loadNative()
    // Only the native pump accepts such clients, so the helper is loaded.
    if (load.ok) load.binding.closeReset(client.fd)
    return
  }
  const socket = socketOf(client)
  socket.on('error', () => {}) // the peer may have gone already; nothing to tell anyone
  socket.resetAndDestroy()
}

/** A client's address and port as the kernel gave them (either may be missing: the peer left). */
export interface Peer {
  address?: string | undefined
  port?: number | undefined
}

/**
 * Where the client came from: read at accept, while the kernel still knows. Kept as read, not
 * formatted: a session formats it only when something shows it (its log line, the admin API).
 */
export function readPeer(client: Accepted): Peer {
  if (isSocket(client)) return { address: client.remoteAddress, port: client.remotePort }
  if (isPumpAccepted(client)) return { address: client.address, port: client.port }
  const out: Peer = {}
  client.getpeername(out)
  return out
}

/** Where the client came from, as host:port. */
export function peerOf(client: Accepted): string {
  const { address, port } = readPeer(client)
  return formatPeer(address, port)
}

/**
 * Closes Node's copy of an accepted client's descriptor (no FIN while a duplicate is open); a
 * client the pump accepted has no other copy (the relay took its descriptor as it is).
 */
export function closeAccepted(client: Accepted): void {
  if (isSocket(client)) client.destroy()
  else if (!isPumpAccepted(client)) client.close()
}
