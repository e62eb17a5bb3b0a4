// One proxied connection: a client leg, a target leg, the bytes between them, and the
// one place that decides how both end. "What happens when the target dies" is here; how
// bytes move is its transport's business (transport/transport.ts: the interface between the
// two; transport/native.ts: the native pump, the default; transport/stream.ts: Node streams).
//
// Rules:
// - A FIN from one side becomes a FIN to the other (half-close); the session is over when
//   both directions have ended, or when the half-closed state sees no byte for its bound
//   (inactivity, as HAProxy's timeout client-fin: a response still streaming is not cut).
// - When a leg dies abnormally (reset, keepalive or user timeout, unreachable) what it had
//   received is read to its end and delivered, and the other leg is ended with an RST, so its
//   peer learns of the failure instead of a normal-looking FIN. Data still on its way to that
//   peer goes first: the RST waits until the peer's kernel has acknowledged every byte, as a
//   direct connection would have shown it (every byte, then the failure), bounded by the flush
//   timeout.
// - Every end of a leg goes through #endLeg; the log says how each leg ended (fin, rst, failed).
// - One timer per session (#phaseTimer): the connect timeout, then the half-close bound, then
//   the flush (its bound, and the check for an acknowledged send queue).
// - Exactly one log line per session, written when both sockets are closed.

import type { Logger } from 'pino'
import { formatEndpoint } from './config/endpoint.ts'
import type { SocketControl } from './socket-control.ts'
import type { KeepaliveSettings } from './keepalive/settings.ts'
import { SocketOptionError } from './errors.ts'
import { PAIR_LOST } from './pair/transport.ts'
import { LEGS, type PairState, type DetachedTransport, type Leg, type LegHandle, type TargetEndpoint, type Transport, type TransportEvents } from './transport/transport.ts'

export type { Leg, LegHandle }

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
  | 'internal_error'
  /** Paired mode: the pair link under the session's channel leg was lost. */
  | 'pair_lost'

/** How the proxy ended a leg: FIN, RST, or it failed by itself (peer reset it, timeout). */
export type LegClose = 'fin' | 'rst' | 'failed'

/**
 * How #endLeg ends a leg:
 * - half: a FIN after the bytes queued for it; the leg stays open for the other direction.
 * - fin: a FIN after the bytes queued for it, and closed (bounded by the flush timeout).
 * - rst: an abnormal end told to a survivor: the bytes on their way to it first, then an RST once
 *   its kernel has acknowledged them all (bounded by the flush timeout).
 * - rst-now: an RST at once, queued bytes discarded.
 * - failed: the leg died by itself; it is closed.
 */
type LegEnd = 'half' | 'fin' | 'rst' | 'rst-now' | 'failed'

/**
 * How often a leg waiting to be reset once its bytes are acknowledged is looked at: soon at
 * first (a reader that keeps up is done in a few ms), then less often (a slow reader, or many
 * sessions flushing at once after their target died, cost little).
 */
const ACK_POLL_FIRST_MS = 10
const ACK_POLL_MAX_MS = 250

/** Shared by all sessions of one listener: built once, never per connection. */
export interface SessionContext {
  targetKeepalive: KeepaliveSettings
  sockets: SocketControl
  /** Client keepalive is inherited from the listening socket unless this is set. */
  clientKeepalivePerSocket: KeepaliveSettings | undefined
  connectTimeoutMs: number
  halfCloseTimeoutMs: number
  flushTimeoutMs: number
  logger: Logger
  onClosed(session: Session): void
  onTargetConnected: ((session: Session) => void) | undefined
  /**
   * The connect to the session's target failed (`error`: ECONNREFUSED, ENOTFOUND, ETIMEDOUT...):
   * the target to try next, or undefined to give up. `tried` holds the ones already tried.
   */
  retarget: ((session: Session, error: string) => TargetEndpoint | undefined) | undefined
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
  /** Where a bug in the proxy was thrown (reason internal_error). */
  stack?: string
}

let nextSessionId = 1
/** With --workers N each loop numbers its sessions N apart, from its own start (numberSessions). */
let sessionIdStep = 1

/** The id the next session gets. */
export function nextSessionIdValue(): number {
  return nextSessionId
}

/** --workers: this loop's sessions are numbered first, first + step, ...: no two loops give the same id. */
export function numberSessions(first: number, step: number): void {
  nextSessionId = first
  sessionIdStep = step
}

/** Sessions adopted by an upgrade keep their ids: new ones are numbered after the highest. */
export function sessionIdsAfter(id: number): void {
  if (Number.isSafeInteger(id) && id >= nextSessionId) nextSessionId = id + 1
}

/**
 * What a session is, as an upgrade hands it over (with its transport's DetachedTransport): its
 * identity, and where its ending stands. Only established sessions that are not ending move:
 * either both directions open, or one ended by its peer's FIN (already relayed as a FIN).
 */
export interface SessionIdentity {
  id: number
  /** Wall-clock start (ms since the epoch): the two processes' monotonic clocks differ. */
  startedAtMs: number
  /** The direction whose peer sent its FIN, if any (the session is half-closed). */
  ended: Leg | null
}
export class Session implements TransportEvents {
  readonly id: number
  /** Where this session goes: chosen by the listener when the client arrived (re-pointed by a reload). */
  upstream: TargetEndpoint
  readonly startedAt: number
  /** Targets whose connect failed for this session (it tries each at most once); made at the first failure. */
  tried: Set<TargetEndpoint> | undefined
  reason: CloseReason | undefined
  reasonLeg: Leg | null = null
  error: string | undefined
  readonly #ctx: SessionContext
  /** How the bytes move: asked about the legs, told how to end them. */
  readonly #transport: Transport
  #closed: Record<Leg, boolean> = { client: false, target: true }
  /** Directions that reached their end (made at the first: an idle session holds none). */
  #ended: Record<Leg, boolean> | undefined
  #closeHow: Record<Leg, LegClose | null> = { client: null, target: null }
  /**
   * The session's one timer, by phase: the connect timeout until the target is up; the half-close
   * bound once one direction has ended; the flush (bound and acknowledgement check) once the
   * session is ending with bytes still on their way.
   */
  #phaseTimer: NodeJS.Timeout | undefined
  /** Set when the flush phase begins: when its bound expires (performance.now()). */
  #flushDeadline: number | undefined
  /** Legs to be reset once their bytes are acknowledged (made when the first is). */
  #resetWhenFlushed: Record<Leg, boolean> | undefined
  #ackPollMs = ACK_POLL_FIRST_MS
  /** Half-closed: bytes moved when last looked at, and since when none have moved. */
  #halfClosedBytes = 0
  #halfClosedIdleSince = 0
  #finished = false
  #stack: string | undefined
  #targetUp = false
  /** The target keepalive the transport sets as the leg connects (setsTargetKeepalive). */
  #keepaliveAtConnect: KeepaliveSettings | undefined

  /**
   * `open` builds the session's transport, which reports to the session (e.g. takes over an
   * accepted client: see Transports.accept); it throws when it cannot (EMFILE...).
   */
  constructor(ctx: SessionContext, upstream: TargetEndpoint, open: (events: TransportEvents) => Transport, adopted?: SessionIdentity) {
    this.#ctx = ctx
    this.upstream = upstream
    if (adopted === undefined) {
      this.id = nextSessionId
      nextSessionId += sessionIdStep
      this.startedAt = performance.now()
    } else {
      this.id = adopted.id
      this.startedAt = performance.now() - Math.max(0, Date.now() - adopted.startedAtMs)
    }
    this.#transport = open(this)
  }

  /**
   * An upgrade takes this session to another process: established, not ending (at most one
   * direction ended by a FIN). Its transport lets go of both sockets without a close; the
   * session is then gone from here with no event and no log line (the other process writes it).
   * undefined when it stays here (connecting, ending, a transport that cannot).
   */
  handOver(): { identity: SessionIdentity; transport: DetachedTransport } | undefined {
    if (!this.#targetUp || this.#finished || this.#flushDeadline !== undefined || this.#resetWhenFlushed !== undefined) return undefined
    const ended = this.#ended
    if (ended?.client === true && ended.target === true) return undefined
    if (this.reason !== undefined && this.reason !== 'client_end' && this.reason !== 'target_end') return undefined
    const transport = this.#transport.detach?.()
    if (transport === undefined) return undefined
    this.#finished = true
    clearTimeout(this.#phaseTimer)
    this.#phaseTimer = undefined
    const identity: SessionIdentity = {
      id: this.id,
      startedAtMs: Math.round(Date.now() - (performance.now() - this.startedAt)),
      ended: ended?.client === true ? 'client' : ended?.target === true ? 'target' : null,
    }
    return { identity, transport }
  }

  /** Not movable by an upgrade now, but shortly (see Transport.settling). */
  get settling(): boolean {
    return this.#targetUp && !this.#finished && this.#flushDeadline === undefined && this.#transport.settling?.() === true
  }

  /**
   * Carries on a session handed over by an upgrade (built with its identity and an adopted
   * transport): both legs are up; the route's keepalive is applied to both (`clientKeepalive`
   * undefined: the sockets have it already), the half-close bound restarts for a half-closed
   * one, and the bytes held are written first.
   */
  adopt(ended: Leg | null, clientKeepalive: KeepaliveSettings | undefined): void {
    const ctx = this.#ctx
    this.#closed.target = false
    this.#targetUp = true
    // undefined: the sockets already have this route's settings (set by the process that handed them over).
    if (clientKeepalive !== undefined) {
      for (const [leg, settings] of [['client', clientKeepalive], ['target', ctx.targetKeepalive]] as const) {
        const handle = this.legHandle(leg)
        try {
          if (handle !== undefined) ctx.sockets.set(handle, settings)
        } catch (err) {
          ctx.logger.warn({ session: this.id, err }, `cannot set ${leg} keepalive`)
        }
      }
    }
    if (ended !== null) {
      this.#ended = { client: ended === 'client', target: ended === 'target' }
      this.#setReason(ended === 'client' ? 'client_end' : 'target_end', ended)
      this.#closeHow[otherLeg(ended)] = 'fin'
      this.#startHalfCloseBound()
    }
    this.#transport.relay()
  }

  get clientAddress(): string {
    return this.#transport.clientAddress
  }

  get targetAddress(): string {
    return this.#transport.targetAddress ?? formatEndpoint(this.upstream.host, this.upstream.port)
  }

  get bytesToTarget(): number {
    return this.#transport.bytesToTarget
  }

  get bytesToClient(): number {
    return this.#transport.bytesToClient
  }

  /** The leg's socket for option calls; undefined once closed or while still connecting. */
  legHandle(leg: Leg): LegHandle | undefined {
    return this.#transport.handle(leg)
  }

  /** Paired mode: its link and resumes (undefined for a plain session). */
  get pair(): PairState | undefined {
    return this.#transport.pair?.()
  }

  /** Bytes for this leg still held by the proxy (not yet in the kernel). */
  queuedBytes(leg: Leg): number {
    return this.#transport.queuedBytes(leg)
  }

  /** Connects the target leg; the client leg is not read until it is up. */
  start(): void {
    const ctx = this.#ctx
    // Normally inherited from the listening socket: then nothing to do per connection.
    const perSocket = ctx.clientKeepalivePerSocket
    const client = perSocket === undefined ? undefined : this.legHandle('client')
    if (perSocket !== undefined && client !== undefined) {
      try {
        ctx.sockets.set(client, perSocket)
      } catch (err) {
        ctx.logger.warn({ session: this.id, err }, 'cannot set client keepalive')
      }
    }
    this.#closed.target = false
    this.#phaseTimer = setTimeout(sessionOnConnectTimeout, ctx.connectTimeoutMs, this)
    this.#connect(this.upstream)
  }

  #connect(target: TargetEndpoint): void {
    const keepalive = this.#ctx.targetKeepalive
    this.#keepaliveAtConnect = this.#transport.setsTargetKeepalive === true ? keepalive : undefined
    this.#transport.connect(target, keepalive)
  }

  /** Ends the session from outside (shutdown): both legs get a FIN. */
  shutdown(): void {
    this.#setReason('shutdown', null)
    this.#endLeg('client', 'fin')
    this.#endLeg('target', 'fin')
  }

  /**
   * Ends the session from outside because its target was declared dead (heartbeat): both
   * peers get an RST at once, data queued for them included; a frozen peer would never take it.
   */
  kill(reason: CloseReason): void {
    const live = LEGS.filter((leg) => this.#transport.isOpen(leg))
    // Already closing for a reason of its own: that reason stands.
    if (live.length === 0) return
    this.#reasonOverride(reason, 'target')
    for (const leg of live) this.#endLeg(leg, 'rst-now')
  }

  /**
   * Something in the proxy itself failed while handling this session's event (a bug): the
   * session is ended at once, both peers reset, and the error (with its stack) goes into its one
   * log line. Never throws: it is the last resort of the transports' event handlers.
   */
  fail(err: unknown): void {
    try {
      this.error = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
      if (err instanceof Error && err.stack !== undefined) this.#stack = err.stack
      this.#reasonOverride('internal_error', null)
      for (const leg of LEGS) this.#endLeg(leg, 'rst-now')
    } catch {
      // Nothing more can be done from here; the transport closes what is left.
    }
  }

  onTargetConnect(keepaliveError?: string): void {
    clearTimeout(this.#phaseTimer)
    this.#phaseTimer = undefined
    this.#targetUp = true
    const ctx = this.#ctx
    // Set by the transport as the leg connected, unless a reload changed them since.
    if (this.#keepaliveAtConnect !== ctx.targetKeepalive) {
      const target = this.legHandle('target')
      try {
        if (target !== undefined) ctx.sockets.set(target, ctx.targetKeepalive)
      } catch (err) {
        ctx.logger.warn({ session: this.id, err }, 'cannot set target keepalive')
      }
    } else if (keepaliveError !== undefined) {
      ctx.logger.warn({ session: this.id, err: new SocketOptionError('keepalive', keepaliveError, `cannot set the target leg's keepalive options as it connected: ${keepaliveError}`) }, 'cannot set target keepalive')
    }
    this.#ctx.onTargetConnected?.(this)
    this.#transport.relay()
  }

  onConnectTimeout(): void {
    this.#phaseTimer = undefined
    if (this.#retry('ETIMEDOUT')) return
    this.error = 'ETIMEDOUT'
    this.#abort('connect_timeout', 'target')
  }

  onEnd(leg: Leg): void {
    // A reset or timeout that arrives while the reader is paused surfaces as a plain EOF.
    const dead = this.#transport.deadReason(leg)
    if (dead !== undefined) {
      this.error ??= dead === 'reset' ? 'ECONNRESET' : 'ETIMEDOUT'
      this.#abort(dead === 'reset' ? (leg === 'client' ? 'client_reset' : 'target_reset') : 'keepalive_timeout', leg)
      return
    }
    const ended = (this.#ended ??= { client: false, target: false })
    ended[leg] = true
    this.#setReason(leg === 'client' ? 'client_end' : 'target_end', leg)
    const peer = otherLeg(leg)
    if (this.#transport.isOpen(peer)) this.#endLeg(peer, 'half')
    // Once ending (failure, flush), the phase timer belongs to the flush.
    if (this.#flushDeadline !== undefined || this.#finished) return
    if (ended.client && ended.target) {
      // Both directions are done; sockets close once their writes are flushed.
      clearTimeout(this.#phaseTimer)
      this.#phaseTimer = undefined
    } else if (this.#phaseTimer === undefined) {
      this.#startHalfCloseBound()
    }
  }

  /** The half-closed state begins: the inactivity bound counts from now and from the bytes so far. */
  #startHalfCloseBound(): void {
    this.#halfClosedBytes = this.bytesToTarget + this.bytesToClient
    this.#halfClosedIdleSince = performance.now()
    this.#phaseTimer = setTimeout(sessionOnHalfCloseTimeout, this.#ctx.halfCloseTimeoutMs / 4, this)
  }

  /**
   * A side that never finishes its half is an abnormal end: both peers are told with an RST.
   * Bytes that moved since the last look restart the wait: what is bounded is inactivity.
   * Looked at every quarter of the bound, so the cut comes 1 to 1.25 bounds after the last byte.
   */
  onHalfCloseTimeout(): void {
    this.#phaseTimer = undefined
    const now = performance.now()
    const bytes = this.bytesToTarget + this.bytesToClient
    if (bytes !== this.#halfClosedBytes) {
      this.#halfClosedBytes = bytes
      this.#halfClosedIdleSince = now
    }
    const idleMs = now - this.#halfClosedIdleSince
    const bound = this.#ctx.halfCloseTimeoutMs
    if (idleMs < bound) {
      this.#phaseTimer = setTimeout(sessionOnHalfCloseTimeout, Math.min(bound - idleMs, bound / 4), this)
      return
    }
    this.#reasonOverride('half_close_timeout', null)
    this.#endLeg('client', 'rst')
    this.#endLeg('target', 'rst')
  }

  /** `code` is the errno name (ECONNRESET...), or a message when there is none. */
  onError(leg: Leg, code: string): void {
    if (leg === 'target' && !this.#targetUp && this.#retry(code)) return
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

  /**
   * The flush phase's tick: a leg waiting for its bytes to be acknowledged is reset once they
   * are; when the bound expires, every leg still open is reset (queued bytes discarded).
   */
  onFlushTick(): void {
    this.#phaseTimer = undefined
    if (this.#finished) return
    const expired = performance.now() >= this.#flushDeadline!
    let waiting = false
    for (const leg of LEGS) {
      if (!this.#transport.isOpen(leg)) continue
      if (expired) {
        this.#endLeg(leg, 'rst-now')
      } else if (this.#resetWhenFlushed?.[leg] === true) {
        if (this.#transport.unacknowledged(leg) === 0) this.#endLeg(leg, 'rst-now')
        else waiting = true
      } else {
        waiting = true // a FIN after a flush: the leg closes when both ways have ended
      }
    }
    if (!waiting || this.#finished) return
    const left = this.#flushDeadline! - performance.now()
    const anyReset = this.#resetWhenFlushed !== undefined
    const next = anyReset ? Math.min(this.#ackPollMs, left) : left
    this.#ackPollMs = Math.min(this.#ackPollMs * 2, ACK_POLL_MAX_MS)
    this.#phaseTimer = setTimeout(sessionOnFlushTick, Math.max(0, next), this)
  }

  /**
   * The connect failed or timed out: when the client is still there and the listener names
   * another target (HAProxy's retries + redispatch), connect to it instead, with a fresh
   * connect timeout. The client has sent nothing through yet: its leg is not read until now.
   */
  #retry(error: string): boolean {
    if (this.reason !== undefined || !this.#transport.isOpen('client')) return false
    this.tried ??= new Set()
    this.tried.add(this.upstream)
    const next = this.#ctx.retarget?.(this, error)
    if (next === undefined) return false
    this.#ctx.logger.warn({ session: this.id, target: this.targetAddress, error, next: `${next.host}:${next.port}` }, 'connect failed: trying the next target')
    this.#transport.abandonConnect()
    this.upstream = next
    clearTimeout(this.#phaseTimer)
    this.#phaseTimer = setTimeout(sessionOnConnectTimeout, this.#ctx.connectTimeoutMs, this)
    this.#connect(next)
    return true
  }

  /** A leg failed: record why and tell the other leg's peer, by RST after what is on its way to it. */
  #abort(reason: CloseReason, leg: Leg): void {
    this.#setReason(reason, leg)
    this.#endLeg(leg, 'failed')
    this.#endLeg(otherLeg(leg), 'rst')
  }

  /** The one way a leg ends: see LegEnd. */
  #endLeg(leg: Leg, how: LegEnd): void {
    const transport = this.#transport
    if (!transport.isOpen(leg)) return
    if (how === 'failed' || transport.isConnecting(leg)) {
      // A target still connecting has no peer to tell; a reset would wait for the connect.
      this.#closeHow[leg] ??= how === 'failed' ? 'failed' : how === 'half' || how === 'fin' ? 'fin' : 'rst'
      transport.destroy(leg)
      return
    }
    if (how === 'half') {
      this.#closeHow[leg] ??= 'fin'
      transport.end(leg)
      return
    }
    if (how === 'rst-now') {
      this.#closeHow[leg] = 'rst'
      transport.reset(leg)
      return
    }
    // Bytes not yet acknowledged by this peer (undefined: unknowable, then what is held here).
    const unacknowledged = transport.unacknowledged(leg)
    if ((unacknowledged ?? transport.queuedBytes(leg)) === 0) {
      this.#closeHow[leg] = how
      if (how === 'rst') transport.reset(leg)
      else transport.destroy(leg)
      return
    }
    // Bytes still on their way to this peer: they go first, bounded, since the peer may not read.
    if (how === 'rst' && unacknowledged !== undefined) {
      this.#closeHow[leg] = 'rst'
      this.#resetWhenFlushed ??= { client: false, target: false }
      this.#resetWhenFlushed[leg] = true
    } else {
      // A FIN after the data (or, where the send queue cannot be read, the only safe end for it).
      this.#closeHow[leg] = 'fin'
      transport.end(leg)
    }
    this.#startFlush()
  }

  #startFlush(): void {
    if (this.#flushDeadline === undefined) {
      this.#flushDeadline = performance.now() + this.#ctx.flushTimeoutMs
    }
    clearTimeout(this.#phaseTimer)
    this.#phaseTimer = undefined
    this.onFlushTick()
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
    this.#transport.release()
    clearTimeout(this.#phaseTimer)
    this.#phaseTimer = undefined
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
    if (this.#stack !== undefined) s.stack = this.#stack
    return s
  }
}


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
    case PAIR_LOST:
      return 'pair_lost'
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

function sessionOnFlushTick(session: Session): void {
  session.onFlushTick()
}
