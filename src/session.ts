// One proxied connection: a client leg, a target leg, the bytes between them, and the
// one place that decides how both end. "What happens when the target dies" is here.
//
// Rules:
// - A FIN from one side becomes a FIN to the other (half-close); the session is over when
//   both directions have ended, or when the half-closed state outlives its bound.
// - When a leg dies abnormally (reset, keepalive or user timeout, unreachable) the other
//   leg is closed at once with an RST, so its peer learns of the failure instead of a
//   normal-looking FIN; unless data is still being flushed to it: then flush, then FIN.
// - Exactly one log line per session, written when both sockets are closed.
//
// Socket handlers are module-level functions that find their session through a symbol:
// no closures per connection, and stack traces name the handler.

import net, { type Socket } from 'node:net'
import type { Logger } from 'pino'
import type { Endpoint } from './config/endpoint.ts'
import { formatEndpoint } from './config/endpoint.ts'
import type { KeepaliveApplier } from './keepalive/socket-options.ts'
import type { KeepaliveSettings } from './keepalive/settings.ts'

export type Leg = 'client' | 'target'

export type CloseReason =
  | 'client_end'
  | 'target_end'
  | 'client_reset'
  | 'target_reset'
  | 'keepalive_timeout'
  | 'client_unreachable'
  | 'target_unreachable'
  | 'client_error'
  | 'target_error'
  | 'connect_failed'
  | 'connect_timeout'
  | 'half_close_timeout'
  | 'target_down'
  | 'shutdown'

/** How the proxy ended a leg: FIN, RST, or it failed by itself (peer reset it, timeout). */
export type LegClose = 'fin' | 'rst' | 'failed'

/** Shared by all sessions of one listener: built once, never per connection. */
export interface SessionContext {
  targetKeepalive: KeepaliveSettings
  keepalive: KeepaliveApplier
  /** Client keepalive is inherited from the listening socket unless this is set. */
  clientKeepalivePerSocket: KeepaliveSettings | undefined
  connectTimeoutMs: number
  halfCloseTimeoutMs: number
  flushTimeoutMs: number
  logger: Logger
  /**
   * Legs not being read because their peer is slow. The kernel reports a reset or a
   * keepalive timeout only to a reader, so the listener checks these for death.
   */
  pausedLegs: Set<Socket>
  onClosed(session: Session): void
  onTargetConnected: ((session: Session) => void) | undefined
}

export interface SessionSummary {
  session: number
  client: string
  target: string
  reason: CloseReason
  leg: Leg | null
  clientClose: LegClose | null
  targetClose: LegClose | null
  bytesToTarget: number
  bytesToClient: number
  durationMs: number
  error?: string
}

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

type LegSocket = Socket & { [kSession]: Session }

let nextSessionId = 1

export class Session {
  readonly id = nextSessionId++
  readonly client: Socket
  /** Where this session goes: chosen by the listener when the client arrived (re-pointed by a reload). */
  upstream: Endpoint & { host: string }
  target: Socket | undefined
  readonly startedAt = performance.now()
  bytesToTarget = 0
  bytesToClient = 0
  reason: CloseReason | undefined
  reasonLeg: Leg | null = null
  error: string | undefined
  #ctx: SessionContext
  #clientClosed = false
  #targetClosed = true
  #clientEnded = false
  #targetEnded = false
  #closeHow: Record<Leg, LegClose | null> = { client: null, target: null }
  #timer: NodeJS.Timeout | undefined
  #finished = false
  #targetUp = false
  #deadLeg: Socket | undefined

  constructor(client: Socket, ctx: SessionContext, upstream: Endpoint & { host: string }) {
    this.client = client
    this.upstream = upstream
    this.#ctx = ctx
    ;(client as LegSocket)[kSession] = this
    client.on('error', socketOnError)
    client.on('close', socketOnClose)
  }

  get clientAddress(): string {
    return formatEndpoint(this.client.remoteAddress, this.client.remotePort)
  }

  get targetAddress(): string {
    const t = this.target
    if (t?.remoteAddress) return formatEndpoint(t.remoteAddress, t.remotePort)
    return formatEndpoint(this.upstream.host, this.upstream.port)
  }

  /** Connects the target leg; the client leg stays paused until it is up. */
  start(): void {
    const ctx = this.#ctx
    if (ctx.clientKeepalivePerSocket) {
      try {
        ctx.keepalive.apply(this.client, ctx.clientKeepalivePerSocket)
      } catch (err) {
        ctx.logger.warn({ session: this.id, err }, 'cannot set client keepalive')
      }
    }
    const target = net.connect({
      host: this.upstream.host,
      port: this.upstream.port,
      allowHalfOpen: true,
      noDelay: true,
      onread: TARGET_READ,
    }) as LegSocket
    target[kSession] = this
    this.target = target
    this.#targetClosed = false
    target.on('connect', targetOnConnect)
    target.on('error', socketOnError)
    target.on('close', socketOnClose)
    this.#timer = setTimeout(sessionOnConnectTimeout, ctx.connectTimeoutMs, this)
  }

  /** Ends the session from outside (shutdown): both legs get a FIN. */
  shutdown(): void {
    this.#setReason('shutdown', null)
    this.#finishLeg('client', 'fin')
    this.#finishLeg('target', 'fin')
  }

  /**
   * Ends the session from outside because its target was declared dead (heartbeat): both
   * peers get an RST at once, data queued for them included; a frozen peer would never take it.
   */
  kill(reason: CloseReason): void {
    const live = [this.client, this.target].filter((s): s is Socket => s !== undefined && !s.destroyed)
    // Already closing for a reason of its own: that reason stands.
    if (live.length === 0) return
    this.#reasonOverride(reason, 'target')
    for (const socket of live) {
      this.#closeHow[this.#legOf(socket)] = 'rst'
      // A connect still in progress is dropped; the kernel resets a SYN-ACK that comes later.
      if (socket.connecting) socket.destroy()
      else socket.resetAndDestroy()
    }
  }

  onTargetConnect(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#targetUp = true
    const target = this.target!
    try {
      this.#ctx.keepalive.apply(target, this.#ctx.targetKeepalive)
    } catch (err) {
      this.#ctx.logger.warn({ session: this.id, err }, 'cannot set target keepalive')
    }
    this.#ctx.onTargetConnected?.(this)
    this.client.on('data', socketOnData)
    for (const socket of [this.client, target]) {
      socket.on('drain', socketOnDrain)
      socket.on('end', socketOnEnd)
    }
    this.client.resume()
  }

  onConnectTimeout(): void {
    this.#timer = undefined
    this.error = 'ETIMEDOUT'
    this.#abort('connect_timeout', 'target')
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
      this.#ctx.pausedLegs.add(from)
    }
  }

  onDrain(socket: Socket): void {
    const from = this.#peerOf(socket)
    this.#ctx.pausedLegs.delete(from)
    if (!from.destroyed) from.resume()
  }

  /** The kernel closed a leg we had paused: read what it still holds, then its end arrives. */
  onPausedLegDead(socket: Socket): void {
    this.#deadLeg = socket
    this.#ctx.pausedLegs.delete(socket)
    socket.resume()
  }

  onEnd(socket: Socket): void {
    const leg = this.#legOf(socket)
    // A reset or timeout that arrives while the reader is paused surfaces as a plain EOF;
    // the kernel's state tells it from a FIN (CLOSE instead of CLOSE_WAIT). Once our own
    // FIN is out, CLOSE is the normal end of the exchange instead.
    const dead = socket.writableEnded ? undefined : this.#ctx.keepalive.deadReason(socket)
    if (dead !== undefined) {
      this.error ??= dead === 'reset' ? 'ECONNRESET' : 'ETIMEDOUT'
      this.#abort(dead === 'reset' ? (leg === 'client' ? 'client_reset' : 'target_reset') : 'keepalive_timeout', leg)
      return
    }
    if (leg === 'client') this.#clientEnded = true
    else this.#targetEnded = true
    this.#setReason(leg === 'client' ? 'client_end' : 'target_end', leg)
    const peer = this.#peerOf(socket)
    if (!peer.destroyed) {
      peer.end()
      this.#closeHow[leg === 'client' ? 'target' : 'client'] ??= 'fin'
    }
    if (this.#clientEnded && this.#targetEnded) {
      // Both directions are done; sockets close once their writes are flushed.
      clearTimeout(this.#timer)
      this.#timer = undefined
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(sessionOnHalfCloseTimeout, this.#ctx.halfCloseTimeoutMs, this)
    }
  }

  /** A side that never finishes its half is an abnormal end: both peers are told with an RST. */
  onHalfCloseTimeout(): void {
    this.#timer = undefined
    this.#reasonOverride('half_close_timeout', null)
    this.#finishLeg('client', 'rst')
    this.#finishLeg('target', 'rst')
  }

  onError(socket: Socket, err: NodeJS.ErrnoException): void {
    const leg = this.#legOf(socket)
    this.#closeHow[leg] ??= 'failed'
    this.error ??= err.code ?? err.message
    if (leg === 'target' && !this.#targetUp) {
      this.#abort('connect_failed', 'target')
      return
    }
    this.#abort(classifyError(leg, err), leg)
  }

  onClose(socket: Socket): void {
    const leg = this.#legOf(socket)
    if (leg === 'client') this.#clientClosed = true
    else this.#targetClosed = true
    if (!this.#clientClosed || !this.#targetClosed) {
      // A leg that closes without an error while the other is still open (e.g. destroyed
      // by its own side after a FIN) takes the other with it.
      if (this.reason === undefined) this.#abort(leg === 'client' ? 'client_end' : 'target_end', leg)
      return
    }
    this.#finish()
  }

  /** A leg failed: record why and tell the other leg's peer, by RST unless data is being flushed to it. */
  #abort(reason: CloseReason, leg: Leg): void {
    this.#setReason(reason, leg)
    this.#finishLeg(leg, 'failed')
    this.#finishLeg(leg === 'client' ? 'target' : 'client', 'rst')
  }

  #finishLeg(leg: Leg, how: LegClose): void {
    const socket = leg === 'client' ? this.client : this.target
    if (!socket || socket.destroyed) return
    if (how === 'failed' || socket.connecting) {
      // A target still connecting has no peer to tell; resetAndDestroy would wait for the connect.
      this.#closeHow[leg] ??= how === 'failed' ? 'failed' : 'rst'
      socket.destroy()
      return
    }
    const flushing = this.#isFlushing(socket)
    if (how === 'rst' && !flushing) {
      this.#closeHow[leg] = 'rst'
      socket.resetAndDestroy()
      return
    }
    // A FIN after the data still queued for this peer; bounded, since the peer may not read.
    this.#closeHow[leg] = 'fin'
    if (flushing) {
      socket.end()
      clearTimeout(this.#timer)
      this.#timer = setTimeout(sessionOnFlushTimeout, this.#ctx.flushTimeoutMs, this)
    } else {
      socket.destroy()
    }
  }

  onFlushTimeout(): void {
    this.#timer = undefined
    for (const socket of [this.client, this.target]) {
      if (socket && !socket.destroyed) socket.resetAndDestroy()
    }
  }

  #isFlushing(socket: Socket): boolean {
    if (socket.connecting) return false
    // Once our FIN is out, it occupies one byte of the send queue until acknowledged.
    const finQueued = socket.writableFinished ? 1 : 0
    return socket.writableLength > 0 || (this.#ctx.keepalive.sendQueueBytes(socket) ?? 0) > finQueued
  }

  #setReason(reason: CloseReason, leg: Leg | null): void {
    if (this.reason !== undefined) return
    this.reason = reason
    this.reasonLeg = leg
  }

  /** A bound that expires replaces the normal end that started the wait. */
  #reasonOverride(reason: CloseReason, leg: Leg | null): void {
    this.reason = reason
    this.reasonLeg = leg
  }

  #finish(): void {
    if (this.#finished) return
    this.#finished = true
    this.#ctx.pausedLegs.delete(this.client)
    if (this.target) this.#ctx.pausedLegs.delete(this.target)
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#ctx.onClosed(this)
  }

  summary(): SessionSummary {
    const s: SessionSummary = {
      session: this.id,
      client: this.clientAddress,
      target: this.targetAddress,
      reason: this.reason ?? 'client_end',
      leg: this.reasonLeg,
      clientClose: this.#closeHow.client,
      targetClose: this.#closeHow.target,
      bytesToTarget: this.bytesToTarget,
      bytesToClient: this.bytesToClient,
      durationMs: Math.round(performance.now() - this.startedAt),
    }
    if (this.error !== undefined) s.error = this.error
    return s
  }

  #legOf(socket: Socket): Leg {
    return socket === this.client ? 'client' : 'target'
  }

  #peerOf(socket: Socket): Socket {
    return socket === this.client ? this.target! : this.client
  }
}

/** ETIMEDOUT on an established socket is the kernel giving up: keepalive probes or TCP_USER_TIMEOUT. */
export function classifyError(leg: Leg, err: NodeJS.ErrnoException): CloseReason {
  switch (err.code) {
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ECONNABORTED':
      return leg === 'client' ? 'client_reset' : 'target_reset'
    case 'ETIMEDOUT':
      return 'keepalive_timeout'
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
    case 'ENETDOWN':
      return leg === 'client' ? 'client_unreachable' : 'target_unreachable'
    default:
      return leg === 'client' ? 'client_error' : 'target_error'
  }
}

/**
 * Run by one shared timer per listener: a paused leg whose connection the kernel has
 * closed (reset, keepalive or user timeout) would otherwise go unnoticed, since only a
 * reader is told.
 */
export function checkPausedLegs(ctx: SessionContext): void {
  for (const socket of ctx.pausedLegs) {
    if (ctx.keepalive.deadReason(socket) !== undefined) (socket as LegSocket)[kSession].onPausedLegDead(socket)
  }
}

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
  this[kSession].onEnd(this)
}

function socketOnError(this: LegSocket, err: Error): void {
  this[kSession].onError(this, err)
}

function socketOnClose(this: LegSocket): void {
  this[kSession].onClose(this)
}

function targetOnConnect(this: LegSocket): void {
  this[kSession].onTargetConnect()
}

function sessionOnConnectTimeout(session: Session): void {
  session.onConnectTimeout()
}

function sessionOnHalfCloseTimeout(session: Session): void {
  session.onHalfCloseTimeout()
}

function sessionOnFlushTimeout(session: Session): void {
  session.onFlushTimeout()
}
