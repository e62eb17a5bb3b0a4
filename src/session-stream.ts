// The session transport over Node streams: used when the native helper is not in use (not
// built, --no-native, KA_PROXY_NATIVE=0) or KA_PROXY_RELAY=stream. The policy of how a
// session ends is in session.ts; this file moves bytes and maps socket events to legs.
//
// Socket handlers are module-level functions that find their session through a symbol:
// no closures per connection, and stack traces name the handler.

import net, { type Socket } from 'node:net'
import type { Endpoint } from './config/endpoint.ts'
import { formatEndpoint } from './config/endpoint.ts'
import { peerOf } from './accept.ts'
import { Session, type Leg, type SessionContext } from './session.ts'

const kSession = Symbol('ka.session')

/**
 * The target leg reads into this one buffer, shared by every session: libuv reads one socket at
 * a time and hands the bytes over at once, and each chunk is copied out before anything else
 * reads. That saves the streams machinery and a 64 KiB allocation per read, costs nothing per
 * idle session, and no queued write ever points into the shared buffer. The client leg, accepted
 * by net.Server, cannot take `onread` and keeps the 'data' event.
 */
const TARGET_READ_BUFFER = Buffer.allocUnsafe(64 * 1024)
const TARGET_READ = { buffer: TARGET_READ_BUFFER, callback: targetOnRead }

type LegSocket = Socket & { [kSession]: StreamSession }

export class StreamSession extends Session {
  readonly client: Socket
  target: Socket | undefined
  bytesToTarget = 0
  bytesToClient = 0
  /** Read at accept: once the socket is destroyed Node no longer knows its peer. */
  readonly clientAddress: string
  #deadLeg: Socket | undefined

  constructor(client: Socket, ctx: SessionContext, upstream: Endpoint & { host: string }) {
    super(ctx, upstream)
    this.client = client
    this.clientAddress = peerOf(client)
    ;(client as LegSocket)[kSession] = this
    client.on('error', socketOnError)
    client.on('close', socketOnClose)
  }

  get targetAddress(): string {
    const t = this.target
    if (t?.remoteAddress) return formatEndpoint(t.remoteAddress, t.remotePort)
    return formatEndpoint(this.upstream.host, this.upstream.port)
  }

  legHandle(leg: Leg): Socket | undefined {
    const socket = this.#socket(leg)
    return socket === undefined || socket.destroyed || socket.connecting ? undefined : socket
  }

  protected connectTarget(): void {
    const target = net.connect({
      host: this.upstream.host,
      port: this.upstream.port,
      allowHalfOpen: true,
      noDelay: true,
      onread: TARGET_READ,
    }) as LegSocket
    target[kSession] = this
    this.target = target
    target.on('connect', targetOnConnect)
    target.on('error', socketOnError)
    target.on('close', socketOnClose)
  }

  protected dropTarget(): void {
    const target = this.target
    if (target === undefined) return
    target.removeListener('connect', targetOnConnect)
    target.removeListener('error', socketOnError)
    target.removeListener('close', socketOnClose)
    target.on('error', ignoreError)
    target.destroy()
    this.target = undefined
  }

  protected beginRelay(): void {
    try {
      // The client leg inherits it from the listening socket.
      this.ctx.keepalive.urgentInline(this.target!)
    } catch (err) {
      this.ctx.logger.warn({ session: this.id, err }, 'cannot set SO_OOBINLINE on the target leg')
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
      this.ctx.pausedLegs.add(from)
    }
  }

  onDrain(socket: Socket): void {
    const from = this.#peerOf(socket)
    this.ctx.pausedLegs.delete(from)
    if (!from.destroyed) from.resume()
  }

  /** The kernel closed a leg we had paused: read what it still holds, then its end arrives. */
  onPausedLegDead(socket: Socket): void {
    this.#deadLeg = socket
    this.ctx.pausedLegs.delete(socket)
    socket.resume()
  }

  protected isOpen(leg: Leg): boolean {
    const socket = this.#socket(leg)
    return socket !== undefined && !socket.destroyed
  }

  protected isConnecting(leg: Leg): boolean {
    return this.#socket(leg)?.connecting === true
  }

  protected endRequested(leg: Leg): boolean {
    return this.#socket(leg)?.writableEnded === true
  }

  protected finSent(leg: Leg): boolean {
    return this.#socket(leg)?.writableFinished === true
  }

  queuedBytes(leg: Leg): number {
    return this.#socket(leg)?.writableLength ?? 0
  }

  protected endLeg(leg: Leg): void {
    this.#socket(leg)?.end()
  }

  protected resetLeg(leg: Leg): void {
    this.#socket(leg)?.resetAndDestroy()
  }

  protected destroyLeg(leg: Leg): void {
    this.#socket(leg)?.destroy()
  }

  protected released(): void {
    this.ctx.pausedLegs.delete(this.client)
    if (this.target) this.ctx.pausedLegs.delete(this.target)
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

/**
 * Run by one shared timer per listener: a paused leg whose connection the kernel has
 * closed (reset, keepalive or user timeout) would otherwise go unnoticed, since only a
 * reader is told.
 */
export function checkPausedLegs(ctx: SessionContext): void {
  for (const socket of ctx.pausedLegs) {
    // Once our FIN is out, CLOSE may be the orderly end (LAST_ACK -> CLOSE): the peer's FIN waits
    // behind the unread bytes, which are read at the reader's pace like any others.
    if (socket.writableFinished) continue
    if (ctx.keepalive.deadReason(socket) !== undefined) (socket as LegSocket)[kSession].onPausedLegDead(socket)
  }
}

function ignoreError(): void {}

function socketOnData(this: LegSocket, chunk: Buffer): void {
  this[kSession].onData(this, chunk)
}

/**
 * Small chunks are copied into Node's shared pool, large ones into a buffer of their own.
 * Always true: backpressure pauses the leg in onData, as for the client leg.
 */
function targetOnRead(this: LegSocket, nread: number): boolean {
  const chunk = Buffer.allocUnsafe(nread)
  TARGET_READ_BUFFER.copy(chunk, 0, 0, nread)
  this[kSession].onData(this, chunk)
  return true
}

function socketOnDrain(this: LegSocket): void {
  this[kSession].onDrain(this)
}

function socketOnEnd(this: LegSocket): void {
  const session = this[kSession]
  session.onEnd(session.legOf(this))
}

function socketOnError(this: LegSocket, err: NodeJS.ErrnoException): void {
  const session = this[kSession]
  session.onError(session.legOf(this), err.code ?? err.message)
}

function socketOnClose(this: LegSocket): void {
  const session = this[kSession]
  session.onClose(session.legOf(this))
}

function targetOnConnect(this: LegSocket): void {
  this[kSession].onTargetConnect()
}
