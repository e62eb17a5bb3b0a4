// The transport over Node streams: used when the native helper is not in use (not built,
// --no-native, KA_PROXY_NATIVE=0) or asked for (KA_PROXY_RELAY=stream). The policy of how a
// session ends is in session.ts; this file moves bytes and maps socket events to legs.
//
// Socket handlers are module-level functions that find their transport through a symbol:
// no closures per connection, and stack traces name the handler. Whatever a handler throws (a
// bug) fails that one session, as with the pump, instead of reaching the process.

import net, { type Socket } from 'node:net'
import { formatEndpoint } from '../config/endpoint.ts'
import { peerOf, socketOf, type Accepted } from '../accept.ts'
import { noDelay } from '../socket-control.ts'
import {
  socketDeadReason,
  socketUnacknowledged,
  type Leg,
  type TargetEndpoint,
  type Transport,
  type TransportDeps,
  type TransportEvents,
  type Transports,
} from './transport.ts'

const kTransport = Symbol('ka.transport')

/**
 * The target leg reads into this one buffer, shared by every session: libuv reads one socket at
 * a time and hands the bytes over at once, and each chunk is copied out before anything else
 * reads. That saves the streams machinery and a 64 KiB allocation per read, costs nothing per
 * idle session, and no queued write ever points into the shared buffer. The client leg, accepted
 * by net.Server, cannot take `onread` and keeps the 'data' event.
 */
const TARGET_READ_BUFFER = Buffer.allocUnsafe(64 * 1024)
const TARGET_READ = { buffer: TARGET_READ_BUFFER, callback: targetOnRead }

type LegSocket = Socket & { [kTransport]: StreamTransport }

/** Sessions of a listener over Node streams, and the legs they paused. */
export class StreamTransports implements Transports {
  readonly kind = 'stream'
  readonly takesHandles = false
  readonly #deps: TransportDeps
  /**
   * Legs not being read because their peer is slow. The kernel reports a reset or a keepalive
   * timeout only to a reader, so these are checked for death.
   */
  readonly paused = new Set<Socket>()

  constructor(deps: TransportDeps) {
    this.#deps = deps
  }

  accept(client: Accepted, events: TransportEvents): Transport {
    return new StreamTransport(socketOf(client), events, this.#deps, this.paused)
  }

  /**
   * A paused leg whose connection the kernel has closed (reset, keepalive or user timeout)
   * would otherwise go unnoticed, since only a reader is told.
   */
  checkPaused(): void {
    for (const socket of this.paused) {
      // Once our FIN is out, CLOSE may be the orderly end (LAST_ACK -> CLOSE): the peer's FIN waits
      // behind the unread bytes, which are read at the reader's pace like any others.
      if (socket.writableFinished) continue
      if (this.#deps.sockets.deadReason(socket) !== undefined) (socket as LegSocket)[kTransport].onPausedLegDead(socket)
    }
  }
}

export class StreamTransport implements Transport {
  readonly client: Socket
  target: Socket | undefined
  bytesToTarget = 0
  bytesToClient = 0
  /** Read at accept: once the socket is destroyed Node no longer knows its peer. */
  readonly clientAddress: string
  readonly events: TransportEvents
  readonly #deps: TransportDeps
  readonly #paused: Set<Socket>
  #deadLeg: Socket | undefined

  constructor(client: Socket, events: TransportEvents, deps: TransportDeps, paused: Set<Socket>) {
    this.client = client
    this.events = events
    this.#deps = deps
    this.#paused = paused
    this.clientAddress = peerOf(client)
    ;(client as LegSocket)[kTransport] = this
    client.on('error', socketOnError)
    client.on('close', socketOnClose)
  }

  get targetAddress(): string | undefined {
    const t = this.target
    return t?.remoteAddress ? formatEndpoint(t.remoteAddress, t.remotePort) : undefined
  }

  handle(leg: Leg): Socket | undefined {
    const socket = this.#socket(leg)
    return socket === undefined || socket.destroyed || socket.connecting ? undefined : socket
  }

  isOpen(leg: Leg): boolean {
    const socket = this.#socket(leg)
    return socket !== undefined && !socket.destroyed
  }

  isConnecting(leg: Leg): boolean {
    return this.#socket(leg)?.connecting === true
  }

  queuedBytes(leg: Leg): number {
    return this.#socket(leg)?.writableLength ?? 0
  }

  unacknowledged(leg: Leg): number | undefined {
    const socket = this.#socket(leg)
    return socketUnacknowledged(this.#deps.sockets, this.handle(leg), socket?.writableLength ?? 0, socket?.writableFinished === true)
  }

  deadReason(leg: Leg): 'reset' | 'timeout' | undefined {
    return socketDeadReason(this.#deps.sockets, this.handle(leg), this.#socket(leg)?.writableEnded === true)
  }

  connect(endpoint: TargetEndpoint): void {
    const target = net.connect({
      host: endpoint.host,
      port: endpoint.port,
      allowHalfOpen: true,
      onread: TARGET_READ,
    }) as LegSocket
    noDelay(target)
    target[kTransport] = this
    this.target = target
    target.on('connect', targetOnConnect)
    target.on('error', socketOnError)
    target.on('close', socketOnClose)
  }

  abandonConnect(): void {
    const target = this.target
    if (target === undefined) return
    target.removeListener('connect', targetOnConnect)
    target.removeListener('error', socketOnError)
    target.removeListener('close', socketOnClose)
    target.on('error', ignoreError)
    target.destroy()
    this.target = undefined
  }

  relay(): void {
    try {
      // The client leg inherits it from the listening socket.
      this.#deps.sockets.urgentInline(this.target!)
    } catch (err) {
      this.#deps.logger.warn({ session: this.events.id, err }, 'cannot set SO_OOBINLINE on the target leg')
    }
    this.client.on('data', socketOnData)
    for (const socket of [this.client, this.target!]) {
      socket.on('drain', socketOnDrain)
      socket.on('end', socketOnEnd)
    }
    this.client.resume()
  }

  onData(from: Socket, chunk: Buffer): void {
    const to = this.#peerOf(from)
    if (from === this.client) this.bytesToTarget += chunk.length
    else this.bytesToClient += chunk.length
    if (to.destroyed) return
    // Backpressure: stop reading until the slower side has taken what it has. A leg
    // known dead is read to its end regardless: what is left is bounded by its receive buffer.
    if (!to.write(chunk) && from !== this.#deadLeg) {
      from.pause()
      this.#paused.add(from)
    }
  }

  onDrain(socket: Socket): void {
    const from = this.#peerOf(socket)
    this.#paused.delete(from)
    if (!from.destroyed) from.resume()
  }

  /** The kernel closed a leg we had paused: read what it still holds, then its end arrives. */
  onPausedLegDead(socket: Socket): void {
    this.#deadLeg = socket
    this.#paused.delete(socket)
    socket.resume()
  }

  end(leg: Leg): void {
    this.#socket(leg)?.end()
  }

  reset(leg: Leg): void {
    this.#socket(leg)?.resetAndDestroy()
  }

  destroy(leg: Leg): void {
    this.#socket(leg)?.destroy()
  }

  release(): void {
    this.#paused.delete(this.client)
    if (this.target) this.#paused.delete(this.target)
  }

  legOf(socket: Socket): Leg {
    return socket === this.client ? 'client' : 'target'
  }

  #socket(leg: Leg): Socket | undefined {
    return leg === 'client' ? this.client : this.target
  }

  #peerOf(socket: Socket): Socket {
    return socket === this.client ? this.target! : this.client
  }
}

function ignoreError(): void {}

function socketOnData(this: LegSocket, chunk: Buffer): void {
  const transport = this[kTransport]
  try {
    transport.onData(this, chunk)
  } catch (err) {
    transport.events.fail(err)
  }
}

/**
 * Small chunks are copied into Node's shared pool, large ones into a buffer of their own.
 * Always true: backpressure pauses the leg in onData, as for the client leg.
 */
function targetOnRead(this: LegSocket, nread: number): boolean {
  const chunk = Buffer.allocUnsafe(nread)
  TARGET_READ_BUFFER.copy(chunk, 0, 0, nread)
  socketOnData.call(this, chunk)
  return true
}

const EV_CONNECT = 1
const EV_END = 2
const EV_ERROR = 3
const EV_CLOSE = 4
const EV_DRAIN = 5

/** A socket's event, told to its session (or, for drain, to its transport). */
function legEvent(socket: LegSocket, kind: number, code: string): void {
  const transport = socket[kTransport]
  try {
    const leg = transport.legOf(socket)
    switch (kind) {
      case EV_CONNECT:
        transport.events.onTargetConnect()
        break
      case EV_END:
        transport.events.onEnd(leg)
        break
      case EV_ERROR:
        transport.events.onError(leg, code)
        break
      case EV_CLOSE:
        transport.events.onClose(leg)
        break
      case EV_DRAIN:
        transport.onDrain(socket)
        break
    }
  } catch (err) {
    transport.events.fail(err)
  }
}

function targetOnConnect(this: LegSocket): void {
  legEvent(this, EV_CONNECT, '')
}

function socketOnEnd(this: LegSocket): void {
  legEvent(this, EV_END, '')
}

function socketOnError(this: LegSocket, err: NodeJS.ErrnoException): void {
  legEvent(this, EV_ERROR, err.code ?? err.message)
}

function socketOnClose(this: LegSocket): void {
  legEvent(this, EV_CLOSE, '')
}

function socketOnDrain(this: LegSocket): void {
  legEvent(this, EV_DRAIN, '')
}
