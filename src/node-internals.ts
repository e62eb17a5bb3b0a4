// Every reach into Node's undocumented internals, in one place. The native helper works on file
// descriptors, and the pump takes accepted connections before Node wraps them, so ka-proxy uses:
//
//   1. `_handle.fd` of a net.Socket or net.Server (the libuv TCP handle's descriptor);
//   2. `_handle.onconnection(status, handle)` of a listening net.Server: replaced, so accepted
//      connections arrive as bare TCP handles and no net.Socket is built per session;
//   3. on such an accepted handle: `fd`, `getpeername(out)` and `close()`; on the listening
//      handle: `setNoDelay(on)`;
//   4. `new net.Socket({ handle })`: a net.Socket around an accepted handle;
//   5. `_handle.readStop()` of a socket (a TLS one: the pair link leaving TLS), with `_read`
//      replaced so that Node does not start reading again (pause() alone keeps reading).
//
// None of this is public API, and a new Node major may change it. `checkNodeInternals()` runs
// once at start-up on a real loopback connection; if anything is missing or behaves otherwise
// the native helper is not used (stream relay, setKeepAlive) and the start-up line says why.
// test/node-internals.test.ts runs the same check and more on every Node line CI runs.

import net, { type Server, type Socket } from 'node:net'
import { once } from 'node:events'

/** Node's accepted TCP handle, before any net.Socket wraps it. */
export interface AcceptedHandle {
  readonly fd: number
  getpeername(out: { address?: string; port?: number }): number
  close(): void
}

interface ListenHandle {
  fd?: unknown
  onconnection?: unknown
  setNoDelay?: (on: boolean) => number
  readStop?: () => number
  reading?: boolean
}

function handleOf(socket: Socket | Server): ListenHandle | null | undefined {
  return (socket as unknown as { _handle?: ListenHandle | null })._handle
}

/** The descriptor behind a socket or server; undefined when it has none (closed, not connected). */
export function handleFd(socket: Socket | Server): number | undefined {
  const fd = handleOf(socket)?.fd
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : undefined
}

/**
 * Routes a listening server's accepted connections to `onHandle` as bare handles. False where
 * the hook is missing: the caller then takes net.Sockets from the 'connection' event.
 */
export function interceptAccept(server: Server, onHandle: (status: number, client: AcceptedHandle | undefined) => void): boolean {
  const handle = handleOf(server)
  if (handle == null || typeof handle.onconnection !== 'function') return false
  handle.onconnection = onHandle
  return true
}

/** TCP_NODELAY on a listening socket, through its handle (net.Server has no public call); false where it cannot. */
export function listenHandleNoDelay(server: Server): boolean {
  const handle = handleOf(server)
  if (handle == null || typeof handle.setNoDelay !== 'function') return false
  return handle.setNoDelay(true) === 0
}

/**
 * Stops a socket reading from the kernel for good: what arrives stays in the kernel for whoever
 * reads the descriptor next (a duplicate). pause() stops only the 'data' events: Node keeps
 * reading into its buffer. False where the handle has no readStop.
 */
export function stopReading(socket: Socket): boolean {
  const handle = handleOf(socket)
  if (handle == null || typeof handle.readStop !== 'function') return false
  socket.pause()
  handle.readStop()
  handle.reading = false
  // Node starts reading again from _read (on the next read(), which a paused stream still makes).
  ;(socket as unknown as { _read: () => void })._read = readNothing
  return true
}

function readNothing(): void {}

/** new net.Socket's options used here: `onread` is documented there since 2024, not in these types yet. */
export interface SocketOptions {
  allowHalfOpen?: boolean
  onread?: { buffer: Buffer; callback: (n: number) => boolean }
}

/** A net.Socket around an accepted handle. */
export function socketFromHandle(handle: AcceptedHandle, options: SocketOptions = {}): Socket {
  return new net.Socket({ handle, ...options } as net.SocketConstructorOpts)
}

let checked: Promise<string[]> | undefined
let missing: string[] | undefined

/**
 * Checks on a loopback connection that each internal above is there and does what ka-proxy
 * expects; resolves to what is missing ([] when all is well). Runs once per process.
 */
export function checkNodeInternals(): Promise<string[]> {
  checked ??= probe().then((m) => (missing = m))
  return checked
}

/** What the last check found missing; [] before any check. */
export function missingNodeInternals(): readonly string[] {
  return missing ?? []
}

/** Names what is missing from a listening server's handle (exported for the test). */
export function missingFromListenHandle(server: Server): string[] {
  const out: string[] = []
  const handle = handleOf(server)
  if (handle == null) return ['net.Server._handle']
  if (handleFd(server) === undefined) out.push('net.Server._handle.fd')
  if (typeof handle.onconnection !== 'function') out.push('net.Server._handle.onconnection')
  if (typeof handle.setNoDelay !== 'function') out.push('net.Server._handle.setNoDelay')
  return out
}

/** Names what is missing from an accepted handle, checked against the client that connected. */
export function missingFromAcceptedHandle(handle: AcceptedHandle | undefined, clientPort: number): string[] {
  if (handle === undefined) return ['accepted handle (onconnection gave none)']
  const out: string[] = []
  if (typeof handle.fd !== 'number' || handle.fd < 0) out.push('accepted handle .fd')
  if (typeof handle.getpeername !== 'function') out.push('accepted handle .getpeername')
  else {
    const peer: { port?: number } = {}
    handle.getpeername(peer)
    if (peer.port !== clientPort) out.push('accepted handle .getpeername (wrong or no port)')
  }
  if (typeof handle.close !== 'function') out.push('accepted handle .close')
  return out
}

async function probe(): Promise<string[]> {
  const server = net.createServer()
  const client = new net.Socket()
  client.on('error', () => {})
  try {
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const out = missingFromListenHandle(server)
    if (out.length > 0) return out
    const accepted = new Promise<AcceptedHandle | undefined>((resolve) => {
      interceptAccept(server, (_status, handle) => resolve(handle))
    })
    client.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
    await once(client, 'connect')
    if (handleFd(client) === undefined) out.push('net.Socket._handle.fd')
    if (typeof handleOf(client)?.readStop !== 'function') out.push('net.Socket._handle.readStop')
    const handle = await withTimeout(accepted, 2000)
    out.push(...missingFromAcceptedHandle(handle, client.localPort ?? -1))
    if (handle !== undefined && out.length === 0) {
      const wrapped = socketFromHandle(handle)
      if (wrapped.remotePort !== client.localPort) out.push('new net.Socket({ handle })')
      wrapped.destroy()
    }
    return out
  } catch (err) {
    // Loopback unavailable and the like: nothing is known to be missing, so nothing is turned off.
    return (err as Error).message === 'timeout' ? ['net.Server._handle.onconnection (never called)'] : []
  } finally {
    client.destroy()
    server.close()
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const t = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), ms)))
  return Promise.race([p, t]).finally(() => clearTimeout(timer))
}
