// How accepted connections reach the listener. With the native pump a client's net.Socket
// would be built only to be closed at once (two stream states, an emitter, a destroy: about
// a third of the CPU a session costs to open), so the listener takes the accepted handle
// itself, through the server handle's `onconnection` hook: the second and last reach into
// Node internals (fdOf is the first). Where the hook is missing, it falls back to the
// 'connection' event.

import net, { type Server, type Socket } from 'node:net'
import { formatPeer } from './config/endpoint.ts'
import { errnoName } from './errors.ts'
import { fdOf } from './keepalive/socket-options.ts'

/** Node's accepted TCP handle, before any net.Socket wraps it. */
export interface AcceptedHandle {
  readonly fd: number
  getpeername(out: { address?: string; port?: number }): number
  close(): void
}

export type Accepted = Socket | AcceptedHandle

export function isSocket(client: Accepted): client is Socket {
  return client instanceof net.Socket
}

/**
 * Calls `take` for each accepted connection. `raw`: hand over bare handles where Node allows
 * it (the caller then owns them: see `closeAccepted`, `socketOf`).
 */
export function onAccepted(server: Server, raw: boolean, take: (client: Accepted) => void, onError: (err: Error) => void): void {
  server.on('error', onError)
  const handle = (server as unknown as { _handle?: { onconnection?: unknown } | null })._handle
  if (!raw || handle == null || typeof handle.onconnection !== 'function') {
    server.on('connection', take)
    return
  }
  // Accepted sockets inherit TCP_NODELAY from the listening socket (Linux): set once here
  // instead of once per client, as net.Server does for a server created with noDelay.
  ;(handle as { setNoDelay?: (on: boolean) => number }).setNoDelay?.(true)
  handle.onconnection = (status: number, client: AcceptedHandle | undefined): void => {
    if (status < 0 || client === undefined) {
      // EMFILE and the like: this accept failed, the listener goes on.
      onError(Object.assign(new Error(`accept: ${status}`), { code: errnoName(status) }))
      return
    }
    take(client)
  }
}

/** A net.Socket for a client, wrapping a bare handle (for the paths that need one). */
export function socketOf(client: Accepted): Socket {
  return isSocket(client) ? client : new net.Socket({ handle: client, allowHalfOpen: true } as net.SocketConstructorOpts)
}

/** Turns a client away with an RST, so it fails fast instead of waiting. */
export function resetAccepted(client: Accepted): void {
  const socket = socketOf(client)
  socket.on('error', () => {}) // the peer may have gone already; nothing to tell anyone
  socket.resetAndDestroy()
}

/** Where the client came from, as host:port: read at accept, while the kernel still knows. */
export function peerOf(client: Accepted): string {
  if (isSocket(client)) return formatPeer(client.remoteAddress, client.remotePort)
  const out: { address?: string; port?: number } = {}
  client.getpeername(out)
  return formatPeer(out.address, out.port)
}

/** The descriptor behind an accepted client. */
export function fdOfAccepted(client: Accepted): number {
  return isSocket(client) ? fdOf(client) : client.fd
}

/** Closes Node's copy of an accepted client's descriptor (no FIN while a duplicate is open). */
export function closeAccepted(client: Accepted): void {
  if (isSocket(client)) client.destroy()
  else client.close()
}
