// The seam between a session's policy (session.ts: how legs end, timers, the log line) and
// the transport that moves its bytes. A session holds one Transport and asks it questions
// about its two legs (open? connecting? bytes held? acknowledged?) and gives it orders (connect,
// relay, FIN, RST, close); the transport answers to the session through TransportEvents
// (connected, end of stream, error, closed). Nothing about the policy lives in a transport,
// and nothing about sockets, descriptors or buffers lives in the session.
//
// Transports (one module each, chosen in registry.ts):
// - native.ts: the native pump (native/ka_pump.c) moves bytes between two descriptors with no
//   JavaScript per chunk; the default when the native helper is in use.
// - stream.ts: Node streams; used without the native helper, or when asked for
//   (KA_PROXY_RELAY=stream).
//
// The seam is made for the transports to come. A session does not build its transport: it is
// given a function that opens one (`Transports.accept` for a client just accepted), so other
// ways to open one need nothing from the session but that function.
// - An upgrade hand-over (a new process adopting live sessions) is a transport built from
//   descriptors that are already connected, plus the state the old process exported as
//   `TransportState`: the bytes it still held for each leg, which FINs were asked for, sent and
//   received, the byte counts, the addresses. Such a transport starts with its target open
//   (`isConnecting('target')` false), so the session does not connect again, and it reports
//   what it still owes through the same `queuedBytes`/`unacknowledged` the flush already reads.
// - A paired link (a leg is a channel of a multiplexed, resumable TLS link: the target leg next
//   to the application, the client leg next to the server) has no kernel socket for that leg:
//   `handle(leg)` is undefined (no socket options to set), and `unacknowledged`/`deadReason`
//   answer from the link's own acknowledgements and liveness instead of the kernel's send queue
//   and TCP state. A link that drops and resumes within its window reports nothing; the
//   session's policy is the same.
// A transport therefore answers every question per leg and in its own terms; the session never
// reaches past it to a socket except through `handle`, for socket options (keepalive).

import type { Endpoint } from '../config/endpoint.ts'
import type { Socket } from 'node:net'
import type { SocketControl } from '../socket-control.ts'
import type { Logger } from 'pino'
import type { Accepted } from '../accept.ts'
import type { Leg } from '../config/keys.ts'
import type { KeepaliveSettings } from '../keepalive/settings.ts'

/** The two legs of a session: one list for the config, the sessions and their transports. */
export { LEGS, type Leg } from '../config/keys.ts'

/** Which transport moves the bytes of a listener's sessions. */
export type TransportKind = 'native' | 'stream'

/** What the socket-option calls address: a Node socket or a descriptor owned by the native pump. */
export type LegHandle = Socket | number

/** Where a session's target leg connects to. */
export type TargetEndpoint = Endpoint & { host: string }

/**
 * What a transport tells its session. Every call comes from an event of the transport (never
 * from inside one of the session's own calls to it, so the session is never re-entered), and a
 * leg's `onClose` comes exactly once, after any other event of that leg.
 */
export interface TransportEvents {
  /** The session's id, for the transport's own log lines. */
  readonly id: number
  /**
   * The target leg is connected (after `connect`). `keepaliveError`: the errno name of the
   * keepalive option a transport that sets them itself (`setsTargetKeepalive`) could not set.
   */
  onTargetConnect(keepaliveError?: string): void
  /** The leg's peer sent its FIN (or what looks like one: see `deadReason`). */
  onEnd(leg: Leg): void
  /** `code` is the errno name (ECONNRESET...), or a message when there is none. */
  onError(leg: Leg, code: string): void
  /** The leg is closed, whoever closed it. */
  onClose(leg: Leg): void
  /** A handler threw (a bug): the session ends at once. Never throws. */
  fail(err: unknown): void
}

/**
 * One session's two legs, as its transport holds them. Questions are cheap (no system call
 * unless said); orders are idempotent on a leg that is already closed.
 */
export interface Transport {
  /** The client's address, as host:port, read when the transport took the client over. */
  readonly clientAddress: string
  /** The target address connected to or being tried, as host:port; undefined before the first try. */
  readonly targetAddress: string | undefined
  /** Bytes read from the client (relayed or still held for the target). */
  readonly bytesToTarget: number
  /** Bytes read from the target (relayed or still held for the client). */
  readonly bytesToClient: number

  /** The leg's socket for option calls; undefined once closed, while connecting, or when it has none. */
  handle(leg: Leg): LegHandle | undefined
  isOpen(leg: Leg): boolean
  isConnecting(leg: Leg): boolean
  /** Bytes for this leg still held by the proxy (not yet handed to the kernel or link). */
  queuedBytes(leg: Leg): number
  /**
   * Bytes for this leg its peer has not acknowledged yet: held here, or sent and unacknowledged
   * (a FIN sent is not counted). undefined when it cannot be known. A system call.
   */
  unacknowledged(leg: Leg): number | undefined
  /**
   * Whether an end of stream just reported on this leg was a failure in disguise: a reset or
   * timeout that arrives while the leg is not being read surfaces as a plain EOF. 'reset' or
   * 'timeout', else undefined (an orderly FIN, or unknowable). A system call.
   */
  deadReason(leg: Leg): 'reset' | 'timeout' | undefined

  /**
   * Starts connecting the target leg; `onTargetConnect` or `onError('target')` follows.
   * `keepalive` is the target leg's: a transport that `setsTargetKeepalive` sets it on the leg
   * as it connects, before `onTargetConnect`; the others leave it to the session.
   */
  connect(target: TargetEndpoint, keepalive: KeepaliveSettings): void
  /** `connect` sets the target leg's keepalive itself (the pump: no call back for it per session). */
  readonly setsTargetKeepalive?: boolean
  /** Abandons a failed or timed-out connect quietly (no further events), to connect elsewhere. */
  abandonConnect(): void
  /** The target is up: bytes start to flow both ways. */
  relay(): void
  /** FIN after the bytes held for the leg; it closes once its peer has ended too. */
  end(leg: Leg): void
  /** RST, bytes held for the leg discarded. */
  reset(leg: Leg): void
  /** Plain close. */
  destroy(leg: Leg): void
  /** The session is over (both legs closed): drop what the transport registered elsewhere. */
  release(): void
  /**
   * An upgrade takes the session away: the legs stop moving bytes and leave this transport
   * without a close (no FIN, no RST reaches a peer), and what it held is returned with the two
   * descriptors, which are then the caller's. undefined when it cannot (nothing changed): a
   * transport without descriptors, a leg connecting, closed or failed. No event follows.
   */
  detach?(): DetachedTransport | undefined
  /**
   * Whether `detach` would succeed shortly though it cannot now (a paired session's bytes still
   * on their way into its socket): an upgrade asks again a moment later.
   */
  settling?(): boolean
  /** Paired mode: the link the session's channel travels on (null: none, waiting to resume) and how often it resumed. */
  pair?(): PairState
}

/** A paired session's link, as /sessions shows it. */
export interface PairState {
  /** The link's peer (host:port), or null while the session waits for a link to resume on. */
  link: string | null
  resumes: number
}

/** A session's transport as an upgrade hands it over: its state and its connected sockets. */
export interface DetachedTransport {
  state: TransportState
  /** client, target (a paired session: its plain leg's alone): owned by the caller. */
  fds: number[]
  /**
   * The session is lost after all (the new process died holding it): a peer the descriptors do not
   * reach is told (a paired session's channel: an RST to the other end of the pair).
   */
  reset?(): void
}

/**
 * What a transport hands over to another process so that a transport there carries on
 * (zero-loss upgrade): per leg, the bytes held for it and its half-close state, plus the
 * counts and addresses (see `detach`, and `Transports.adopt` on the other side).
 */
export interface TransportState {
  legs: Record<Leg, LegState>
  bytesToTarget: number
  bytesToClient: number
  clientAddress: string
  targetAddress: string | undefined
  /** A paired session (format 6): its channel; its one descriptor is the plain leg's. */
  pair?: PairChannelState
}

/**
 * A paired session's channel as an upgrade hands it over (src/pair/channel.ts): the bytes of each
 * direction numbered as before, so a resume on the new process's link carries on where the old
 * one stopped. The bytes sent and not acknowledged travel as the channel leg's `queued`.
 */
export interface PairChannelState {
  id: number
  /** 128 bits naming the session to both ends. */
  token: Buffer
  sent: number
  acked: number
  received: number
  finSent: boolean
  finReceived: boolean
  finAcked: boolean
  resumes: number
  /** Milliseconds since its link was lost (the resume window counts on); null while it had one. */
  lostMs: number | null
}

/** The bytes held for a leg that holds none: shared by all such legs, never written. */
export const NOTHING_HELD: Buffer = Buffer.alloc(0)

export interface LegState {
  /** The bytes held for this leg, in order (read from its peer, not yet written to it). */
  queued: Buffer
  /** A FIN was asked for (it may still wait behind `queued`). */
  endRequested: boolean
  /** The FIN was handed to the kernel. */
  finSent: boolean
  /** The leg's peer sent its FIN (end of stream read). */
  endReceived: boolean
  connecting: boolean
}

/** What every transport of a listener shares: built once, never per connection. */
export interface TransportDeps {
  sockets: SocketControl
  logger: Logger
}

/** The transports of one listener: one per session, opened for each accepted client. */
export interface Transports {
  /** pair: paired mode's (src/pair/transport.ts), chosen by a route's options, not by the relay. */
  readonly kind: TransportKind | 'pair'
  /** Accepted clients may come as bare handles (no net.Socket built for them). */
  readonly takesHandles: boolean
  /**
   * Takes over an accepted client for a new session. Throws (EMFILE...) when it cannot; the
   * client is then still the caller's.
   */
  accept(client: Accepted, events: TransportEvents): Transport
  /**
   * Carries on a session handed over by an upgrade: both legs connected, the bytes held written
   * first once `relay()` is called. `own`: the transport takes `fds` themselves (received by this
   * process for it); else duplicates, and the caller closes its own. Absent on a transport that
   * cannot. Throws (EMFILE...) when it cannot take the descriptors: they are the caller's then.
   */
  adopt?(fds: readonly number[], state: TransportState, events: TransportEvents, own?: boolean): Transport
  /**
   * Accepts the clients of a listening socket itself, in one batch per loop turn, calling `take`
   * for each, and `onError` with the errno name when
   * accepting failed: it is then stopped until `resume`. The acceptor holds its own copy of the
   * listening descriptor; the caller may close its own. Absent where Node accepts for the
   * transport. Throws (EMFILE...) when it cannot start.
   */
  acceptOn?(listenFd: number, take: (client: Accepted) => void, onError: (code: string) => void): TransportAcceptor
  /**
   * Run once a second: legs not being read because their peer is slow are checked for death
   * (the kernel reports a reset or a keepalive timeout only to a reader).
   */
  checkPaused(): void
  /** The listener stops: whatever the transports hold besides sessions (pair links) goes. */
  close?(): Promise<void>
}

/** A listening socket a transport accepts on (see `Transports.acceptOn`). */
export interface TransportAcceptor {
  /** The listening descriptor it holds (for the upgrade hand-over); undefined once closed. */
  readonly fd: number | undefined
  /** Accepts again after an error (or pause) stopped it. */
  resume(): void
  /** Stops accepting until resume(), the socket kept open (--workers: another event loop accepts). */
  pause(): void
  /** Takes at most `n` clients per wake-up (--workers: the other loops take the rest of a burst). */
  batch(n: number): void
  /** Stops accepting and closes its descriptor (the socket closes with the last copy). */
  close(): void
}

/**
 * Bytes a leg's peer has not acknowledged, for a transport over a kernel socket: what is held
 * for it plus the kernel's send queue, where a FIN sent occupies one byte until acknowledged.
 */
export function socketUnacknowledged(sockets: SocketControl, handle: LegHandle | undefined, queued: number, finSent: boolean): number | undefined {
  const inKernel = handle === undefined ? 0 : sockets.sendQueueBytes(handle)
  if (inKernel === undefined) return undefined
  return queued + Math.max(0, inKernel - (finSent ? 1 : 0))
}

/**
 * For a transport over a kernel socket: the kernel's state tells a reset or timeout from a FIN
 * (CLOSE instead of CLOSE_WAIT). Once our own FIN is out, CLOSE is the normal end of the
 * exchange instead.
 */
export function socketDeadReason(sockets: SocketControl, handle: LegHandle | undefined, endRequested: boolean): 'reset' | 'timeout' | undefined {
  return endRequested || handle === undefined ? undefined : sockets.deadReason(handle)
}
