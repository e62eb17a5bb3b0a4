// One proxied connection: a client leg, a target leg, the bytes between them, and the
// one place that decides how both end. "What happens when the target dies" is here; how
// bytes move is a transport's business (session-native.ts: the native pump, the default;
// session-stream.ts: Node streams, when the native helper is not in use).
//
// Rules:
// - A FIN from one side becomes a FIN to the other (half-close); the session is over when
//   both directions have ended, or when the half-closed state outlives its bound.
// - When a leg dies abnormally (reset, keepalive or user timeout, unreachable) the other
//   leg is closed at once with an RST, so its peer learns of the failure instead of a
//   normal-looking FIN; unless data is still being flushed to it: then flush, then FIN.
// - Exactly one log line per session, written when both sockets are closed.

import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { Endpoint } from './config/endpoint.ts'
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
   * Stream legs not being read because their peer is slow. The kernel reports a reset or a
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

/** What the socket-option calls address: a Node socket or a descriptor owned by the native pump. */
export type LegHandle = Socket | number

let nextSessionId = 1

export abstract class Session {
  readonly id = nextSessionId++
  /** Where this session goes: chosen by the listener when the client arrived (re-pointed by a reload). */
  upstream: Endpoint & { host: string }
  readonly startedAt = performance.now()
  reason: CloseReason | undefined
  reasonLeg: Leg | null = null
  error: string | undefined
  protected readonly ctx: SessionContext
  #closed: Record<Leg, boolean> = { client: false, target: true }
  #ended: Record<Leg, boolean> = { client: false, target: false }
  #closeHow: Record<Leg, LegClose | null> = { client: null, target: null }
  #timer: NodeJS.Timeout | undefined
  #finished = false
  #targetUp = false

  constructor(ctx: SessionContext, upstream: Endpoint & { host: string }) {
    this.ctx = ctx
    this.upstream = upstream
  }

  abstract get clientAddress(): string
  abstract get targetAddress(): string
  abstract get bytesToTarget(): number
  abstract get bytesToClient(): number
  /** The leg's socket for option calls; undefined once closed or while still connecting. */
  abstract legHandle(leg: Leg): LegHandle | undefined

  /** Starts connecting the target leg; events come back through onTargetConnect, onError... */
  protected abstract connectTarget(): void
  /** The target is up: bytes start to flow both ways. */
  protected abstract beginRelay(): void
  protected abstract isOpen(leg: Leg): boolean
  protected abstract isConnecting(leg: Leg): boolean
  /** A FIN to this leg was asked for (it may still wait behind queued bytes). */
  protected abstract endRequested(leg: Leg): boolean
  /** The FIN asked for has been handed to the kernel. */
  protected abstract finSent(leg: Leg): boolean
  /** Bytes for this leg still held by the proxy (not yet in the kernel). */
  abstract queuedBytes(leg: Leg): number
  /** FIN after the queued bytes; the leg closes once its peer has ended too. */
  protected abstract endLeg(leg: Leg): void
  /** RST, queued bytes discarded. */
  protected abstract resetLeg(leg: Leg): void
  /** Plain close. */
  protected abstract destroyLeg(leg: Leg): void
  /** The session is over: drop what the transport registered elsewhere. */
  protected abstract released(): void

  /** Connects the target leg; the client leg is not read until it is up. */
  start(): void {
    const ctx = this.ctx
    // Normally inherited from the listening socket: then nothing to do per connection.
    const perSocket = ctx.clientKeepalivePerSocket
    const client = perSocket === undefined ? undefined : this.legHandle('client')
    if (perSocket !== undefined && client !== undefined) {
      try {
        ctx.keepalive.apply(client, perSocket)
      } catch (err) {
        ctx.logger.warn({ session: this.id, err }, 'cannot set client keepalive')
      }
    }
    this.#closed.target = false
    this.#timer = setTimeout(sessionOnConnectTimeout, ctx.connectTimeoutMs, this)
    this.connectTarget()
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
    const live = LEGS.filter((leg) => this.isOpen(leg))
    // Already closing for a reason of its own: that reason stands.
    if (live.length === 0) return
    this.#reasonOverride(reason, 'target')
    for (const leg of live) {
      this.#closeHow[leg] = 'rst'
      // A connect still in progress is dropped; the kernel resets a SYN-ACK that comes later.
      if (this.isConnecting(leg)) this.destroyLeg(leg)
      else this.resetLeg(leg)
    }
  }

  onTargetConnect(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#targetUp = true
    const target = this.legHandle('target')
    try {
      if (target !== undefined) this.ctx.keepalive.apply(target, this.ctx.targetKeepalive)
    } catch (err) {
      this.ctx.logger.warn({ session: this.id, err }, 'cannot set target keepalive')
    }
    this.ctx.onTargetConnected?.(this)
    this.beginRelay()
  }

  onConnectTimeout(): void {
    this.#timer = undefined
    this.error = 'ETIMEDOUT'
    this.#abort('connect_timeout', 'target')
  }

  onEnd(leg: Leg): void {
    // A reset or timeout that arrives while the reader is paused surfaces as a plain EOF;
    // the kernel's state tells it from a FIN (CLOSE instead of CLOSE_WAIT). Once our own
    // FIN is out, CLOSE is the normal end of the exchange instead.
    const handle = this.endRequested(leg) ? undefined : this.legHandle(leg)
    const dead = handle === undefined ? undefined : this.ctx.keepalive.deadReason(handle)
    if (dead !== undefined) {
      this.error ??= dead === 'reset' ? 'ECONNRESET' : 'ETIMEDOUT'
      this.#abort(dead === 'reset' ? (leg === 'client' ? 'client_reset' : 'target_reset') : 'keepalive_timeout', leg)
      return
    }
    this.#ended[leg] = true
    this.#setReason(leg === 'client' ? 'client_end' : 'target_end', leg)
    const peer = otherLeg(leg)
    if (this.isOpen(peer)) {
      this.#closeHow[peer] ??= 'fin'
      this.endLeg(peer)
    }
    if (this.#ended.client && this.#ended.target) {
      // Both directions are done; sockets close once their writes are flushed.
      clearTimeout(this.#timer)
      this.#timer = undefined
    } else if (this.#timer === undefined && !this.#finished) {
      this.#timer = setTimeout(sessionOnHalfCloseTimeout, this.ctx.halfCloseTimeoutMs, this)
    }
  }

  /** A side that never finishes its half is an abnormal end: both peers are told with an RST. */
  onHalfCloseTimeout(): void {
    this.#timer = undefined
    this.#reasonOverride('half_close_timeout', null)
    this.#finishLeg('client', 'rst')
    this.#finishLeg('target', 'rst')
  }

  /** `code` is the errno name (ECONNRESET...), or a message when there is none. */
  onError(leg: Leg, code: string): void {
    this.#closeHow[leg] ??= 'failed'
    this.error ??= code
    if (leg === 'target' && !this.#targetUp) {
      this.#abort('connect_failed', 'target')
      return
    }
    this.#abort(classifyError(leg, code), leg)
  }

  onClose(leg: Leg): void {
    this.#closed[leg] = true
    if (!this.#closed.client || !this.#closed.target) {
      // A leg that closes without an error while the other is still open (e.g. destroyed
      // by its own side after a FIN) takes the other with it.
      if (this.reason === undefined) this.#abort(leg === 'client' ? 'client_end' : 'target_end', leg)
      return
    }
    this.#finish()
  }

  onFlushTimeout(): void {
    this.#timer = undefined
    for (const leg of LEGS) {
      if (this.isOpen(leg)) this.resetLeg(leg)
    }
  }

  /** A leg failed: record why and tell the other leg's peer, by RST unless data is being flushed to it. */
  #abort(reason: CloseReason, leg: Leg): void {
    this.#setReason(reason, leg)
    this.#finishLeg(leg, 'failed')
    this.#finishLeg(otherLeg(leg), 'rst')
  }

  #finishLeg(leg: Leg, how: LegClose): void {
    if (!this.isOpen(leg)) return
    if (how === 'failed' || this.isConnecting(leg)) {
      // A target still connecting has no peer to tell; a reset would wait for the connect.
      this.#closeHow[leg] ??= how === 'failed' ? 'failed' : 'rst'
      this.destroyLeg(leg)
      return
    }
    const flushing = this.#isFlushing(leg)
    if (how === 'rst' && !flushing) {
      this.#closeHow[leg] = 'rst'
      this.resetLeg(leg)
      return
    }
    // A FIN after the data still queued for this peer; bounded, since the peer may not read.
    this.#closeHow[leg] = 'fin'
    if (flushing) {
      clearTimeout(this.#timer)
      this.#timer = setTimeout(sessionOnFlushTimeout, this.ctx.flushTimeoutMs, this)
      this.endLeg(leg)
    } else {
      this.destroyLeg(leg)
    }
  }

  #isFlushing(leg: Leg): boolean {
    if (this.isConnecting(leg)) return false
    if (this.queuedBytes(leg) > 0) return true
    const handle = this.legHandle(leg)
    // Once our FIN is out, it occupies one byte of the send queue until acknowledged.
    const finQueued = this.finSent(leg) ? 1 : 0
    return handle !== undefined && (this.ctx.keepalive.sendQueueBytes(handle) ?? 0) > finQueued
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
    this.released()
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.ctx.onClosed(this)
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
}

const LEGS: readonly Leg[] = ['client', 'target']

function otherLeg(leg: Leg): Leg {
  return leg === 'client' ? 'target' : 'client'
}

/** ETIMEDOUT on an established socket is the kernel giving up: keepalive probes or TCP_USER_TIMEOUT. */
export function classifyError(leg: Leg, code: string): CloseReason {
  switch (code) {
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

function sessionOnConnectTimeout(session: Session): void {
  session.onConnectTimeout()
}

function sessionOnHalfCloseTimeout(session: Session): void {
  session.onHalfCloseTimeout()
}

function sessionOnFlushTimeout(session: Session): void {
  session.onFlushTimeout()
}
