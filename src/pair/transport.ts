// Paired mode as a transport (transport/transport.ts): a session whose one leg is a Node socket
// and whose other leg is a channel over a pair link. Near end: the client leg is the accepted
// socket, the target leg a channel to the far end. Far end: the client leg is a channel opened by
// the near end, the target leg a socket to the target. The session's policy (session.ts) is the
// same as for any session: a FIN on one side becomes a FIN on the other, a reset a reset.
//
// - PairTransport: one session's two legs. The channel leg has no socket (`handle` undefined),
//   answers `unacknowledged` from the peer's acknowledgements, and is never "dead in disguise".
//   Reading the socket leg stops while its channel has no credit, and what arrives from the
//   channel is acknowledged once the socket took it (write() without backpressure, or 'drain').
//   Once the session relays, the socket leg is read by the byte pump (pump-reader.ts), not Node.
// - PairTransports: a route's links and the channels on them. Near end: one LinkDialer, new
//   sessions OPEN channels on it. Far end: a PairLinkServer, whose OPEN frames become sessions
//   of the listener (through `openSession`). A link that dies leaves its sessions waiting for a
//   RESUME on another, up to the resume window (then pair_lost).
// - An upgrade (src/upgrade.ts, format 6) moves a session as its socket and its channel's state
//   (PairTransport.detach); the new process resumes it on a link of its own (PairTransports.adopt).
//
// Every event a channel brings comes from a link's socket event; what the session's own calls
// cause (a reset, a close) is told on the next tick, so the session is never re-entered.

import net, { type AddressInfo, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { formatEndpoint } from '../config/endpoint.ts'
import type { PairOptions } from '../config/options.ts'
import { isSocket, peerOf, socketOf, type Accepted } from '../accept.ts'
import { noDelay, type SocketControl } from '../socket-control.ts'
import type { RefusalLog } from '../refusals.ts'
import type { KeepaliveSettings } from '../keepalive/settings.ts'
import { NOTHING_HELD, socketDeadReason, socketUnacknowledged, type DetachedTransport, type Leg, type LegHandle, type LegState, type PairState, type TargetEndpoint, type Transport, type TransportEvents, type TransportState, type Transports } from '../transport/transport.ts'
import { handleFd } from '../node-internals.ts'
import { loadNative } from '../native.ts'
import { Channel } from './channel.ts'
import { readPool } from './read-pool.ts'
import { PumpReader, type PumpReadSink } from './pump-reader.ts'
import { writeDirect } from './direct-write.ts'
import { LinkDialer, PairLinkServer, type LinkEvents, type LinkOptions, type PairLink } from './link.ts'
import { FRAME, frameHeader, LINK_NOTSENT_LOWAT, readOffset, TOKEN_BYTES, type FrameType } from './protocol.ts'
import { pairKeys } from './secret.ts'

/** Sessions an upgrade hands over within this share one resume-window check. */
const ADOPTED_CHECK_MS = 100

/** The error a channel leg reports when its link is lost (classified as pair_lost by the session). */
export const PAIR_LOST = 'pair_lost'

const kPair = Symbol('ka.pair')
type PairSocket = Socket & { [kPair]: PairTransport }

export class PairTransport implements Transport, PumpReadSink {
  readonly events: TransportEvents
  readonly channel: Channel
  readonly socketLeg: Leg
  readonly channelLeg: Leg
  socket: Socket | undefined
  bytesToTarget = 0
  bytesToClient = 0
  readonly clientAddress: string
  readonly #deps: PairTransportDeps
  /** Near end: the far end's address; far end: read from the target socket. */
  readonly #farAddress: string | undefined
  #channelOpen = true
  /** Near end: the far end has not yet said the target is connected. */
  #channelConnecting: boolean
  #relaying = false
  /**
   * Adopted half-closed (an upgrade): the socket's peer had sent its FIN (its end was read and
   * relayed; reading again would tell it twice), or our FIN had gone out through the old process.
   */
  #socketReadEnded = false
  #socketFinSent = false
  /** Read (onread) before the session relays: sent once it does. */
  readonly #early: Buffer[] = []
  /** The socket leg's connection is known dead (found by checkPaused): it is read to its end whatever the channel's credit. */
  #readToEnd = false
  /**
   * Its socket was made with the read pool's onread (a client accepted as a handle, a target
   * connected here), so Node holds none of its bytes and pause() stops its reads: once relaying,
   * the pump reads it (pump-reader.ts). Not an adopted socket, nor a client accepted as a socket
   * (Node has been reading it into its own buffer).
   */
  readonly #pumpReadable: boolean
  /** The pump reading the socket leg, from relay() on; else Node does. */
  #reader: PumpReader | undefined

  /** `adopted`: handed over by an upgrade, its plain leg's socket connected (and paused) and both legs up. */
  constructor(deps: PairTransportDeps, events: TransportEvents, channel: Channel, socketLeg: Leg, client: { socket: Socket; onread: boolean } | { address: string }, farAddress?: string, adopted?: { socket: Socket; state: TransportState }) {
    this.#deps = deps
    this.events = events
    this.channel = channel
    this.socketLeg = socketLeg
    this.channelLeg = socketLeg === 'client' ? 'target' : 'client'
    this.#channelConnecting = this.channelLeg === 'target' && adopted === undefined
    this.#farAddress = farAddress
    this.#pumpReadable = 'socket' in client ? client.onread : adopted === undefined
    if ('socket' in client) {
      this.clientAddress = peerOf(client.socket)
      this.#adopt(client.socket)
    } else {
      this.clientAddress = client.address
    }
    if (adopted !== undefined) {
      const { state } = adopted
      this.bytesToTarget = state.bytesToTarget
      this.bytesToClient = state.bytesToClient
      this.#socketReadEnded = state.legs[socketLeg].endReceived
      this.#socketFinSent = state.legs[socketLeg].finSent
      this.#adopt(adopted.socket)
    }
  }

  get targetAddress(): string | undefined {
    if (this.#farAddress !== undefined) return this.#farAddress
    const t = this.socket
    return t?.remoteAddress ? formatEndpoint(t.remoteAddress, t.remotePort) : undefined
  }

  handle(leg: Leg): LegHandle | undefined {
    const s = this.socket
    return leg === this.socketLeg && s !== undefined && !s.destroyed && !s.connecting ? s : undefined
  }

  isOpen(leg: Leg): boolean {
    if (leg === this.channelLeg) return this.#channelOpen
    return this.socket !== undefined && !this.socket.destroyed
  }

  isConnecting(leg: Leg): boolean {
    if (leg === this.channelLeg) return this.#channelOpen && this.#channelConnecting
    return this.socket?.connecting === true
  }

  queuedBytes(leg: Leg): number {
    if (leg === this.channelLeg) return this.channel.unacknowledged
    return this.socket?.writableLength ?? 0
  }

  unacknowledged(leg: Leg): number | undefined {
    if (leg === this.channelLeg) return this.channel.unacknowledged
    const s = this.socket
    return socketUnacknowledged(this.#deps.sockets, this.handle(leg), s?.writableLength ?? 0, s?.writableFinished === true)
  }

  deadReason(leg: Leg): 'reset' | 'timeout' | undefined {
    if (leg === this.channelLeg) return undefined
    return socketDeadReason(this.#deps.sockets, this.handle(leg), this.socket?.writableEnded === true || this.#socketFinSent)
  }

  /** Near end: the target leg is a channel: OPEN (now, or once the link is up). Far end: a socket. */
  connect(target: TargetEndpoint): void {
    if (this.channelLeg === 'target') {
      this.#deps.open(this)
      return
    }
    const socket: Socket = net.connect({ host: target.host, port: target.port, allowHalfOpen: true, onread: plainLegOnread(() => socket) })
    noDelay(socket)
    this.#adopt(socket)
    socket.on('connect', pairSocketOnConnect)
  }

  abandonConnect(): void {
    // A pair route has one target (the far end, or the far end's target): nothing to retry.
    const s = this.socket
    if (s === undefined || this.socketLeg !== 'target') return
    s.removeAllListeners()
    s.on('error', ignoreError)
    s.destroy()
    this.socket = undefined
  }

  relay(): void {
    this.#relaying = true
    const s = this.socket!
    s.on('drain', pairSocketOnDrain)
    this.#deps.unread.delete(this)
    for (const piece of this.#early.splice(0)) this.onSocketData(piece)
    if (this.#socketReadEnded) return
    s.on('end', pairSocketOnEnd)
    // Read by the pump where it can (only a socket read through onread: Node holds none of its
    // bytes); else (adopted, a client accepted as a socket, or no native helper) by Node.
    if (this.#pumpReadable && this.#deps.direct) this.#reader = PumpReader.open(s, this, handleFd(s))
    if (this.#reader === undefined) s.on('data', pairSocketOnData)
    if (!this.channel.full || this.#readToEnd) this.#readSocket(s)
    else this.#unread()
  }

  end(leg: Leg): void {
    if (leg === this.channelLeg) {
      this.channel.fin()
      this.#closeChannelIfDone()
    } else if (!this.#socketFinSent) {
      const s = this.socket
      s?.end()
      // Adopted with its peer's FIN read by the old process: Node, not reading it again, would
      // never see both directions done and close the socket; it is closed once our FIN is out.
      if (this.#socketReadEnded) s?.once('finish', destroySocket)
    }
  }

  reset(leg: Leg): void {
    if (leg === this.channelLeg) {
      if (!this.#channelOpen) return
      this.#rst()
      this.#closeChannel()
    } else {
      const s = this.socket
      // The pump's descriptor first: the socket ends with Node's close, not after it.
      this.#reader?.close()
      // libuv cannot reset a socket whose FIN is out (UV_EINVAL, and no 'close' would ever come):
      // that one is closed instead; its peer already had the FIN.
      if (s?.writableEnded === true || this.#socketFinSent) s?.destroy()
      else s?.resetAndDestroy()
    }
  }

  destroy(leg: Leg): void {
    if (leg !== this.channelLeg) {
      this.#reader?.close()
      this.socket?.destroy()
      return
    }
    if (!this.#channelOpen) return
    // A channel closed before both of its directions ended: the peer must not wait for the rest.
    if (!this.channel.finSent || !this.channel.finReceived) this.#rst()
    this.#closeChannel()
  }

  /**
   * RST to the peer; without a link (waiting to resume), on the next one: the peer knows the
   * session by its token only until then, so it is resumed there and reset at once.
   */
  #rst(): void {
    const c = this.channel
    if (c.link === undefined && c.opened && this.channelLeg === 'target') this.#deps.resetLater(c)
    else c.rst()
  }

  release(): void {
    this.#deps.forget(this)
  }

  /** The socket leg is not read (the session not relaying yet, or the channel out of credit): its death is looked for. */
  #unread(): void {
    this.#deps.unread.add(this)
  }

  #readSocket(s: Socket): void {
    this.#deps.unread.delete(this)
    if (this.#reader !== undefined) this.#reader.start()
    else s.resume()
  }

  #pauseSocket(s: Socket): void {
    if (this.#reader !== undefined) this.#reader.pause()
    else s.pause()
  }

  /**
   * The kernel closed the socket leg while it was not read (reset, keepalive or user timeout):
   * a client that gave up while its session waits for a link, or while the channel is out of
   * credit, is not kept until then. What it still holds is read (bounded by its receive
   * buffer), then its error arrives as any read's would.
   */
  onUnreadLegDead(): void {
    this.#readToEnd = true
    const s = this.socket
    if (s !== undefined && !s.destroyed) this.#readSocket(s)
  }

  /**
   * An upgrade takes the session (format 6): its plain leg's socket goes as a duplicate (Node's
   * copy closes: no FIN, no RST), its channel as its offsets and the bytes sent and not yet
   * acknowledged, and this process forgets the channel without a word to the peer: the new
   * process resumes it on a link of its own, and what the peer sent here meanwhile, never
   * acknowledged, comes again. Only while nothing is on its way into the socket (Node's write
   * queue is empty, and a FIN asked for is out: those bytes are acknowledged or about to be, and
   * no descriptor carries them); see `settling`. Half-closed, the FINs read and sent go along.
   */
  detach(): DetachedTransport | undefined {
    const s = this.socket
    const c = this.channel
    if (!this.#movable() || this.#settlingNow()) return undefined
    const native = loadNative()
    const fd = handleFd(s!)
    if (!native.ok || fd === undefined) return undefined
    let copy: number
    try {
      copy = native.binding.dupFd(fd)
    } catch {
      return undefined
    }
    const clientAddress = this.clientAddress
    const targetAddress = this.targetAddress
    const readEnded = s!.readableEnded
    // The pump reads it no more (what it read was handed on as it came).
    this.#reader?.close()
    // What Node read ahead of the plain leg goes into the channel like any read: sent, and kept
    // until acknowledged, so it travels with the rest. Nothing more is read before the close.
    s!.removeListener('data', pairSocketOnData)
    s!.removeListener('end', pairSocketOnEnd)
    s!.pause()
    for (let chunk: Buffer | null; (chunk = s!.read() as Buffer | null) !== null; ) this.onSocketData(chunk)
    s!.removeAllListeners()
    s!.on('error', ignoreError)
    s!.destroy()
    this.socket = undefined
    this.#channelOpen = false
    this.#deps.forget(this)
    const socketLeg: LegState = { queued: NOTHING_HELD, endRequested: this.#socketFinSent || s!.writableEnded, finSent: this.#socketFinSent || s!.writableEnded, endReceived: this.#socketReadEnded || readEnded, connecting: false }
    const channelLeg: LegState = { queued: c.unackedBytes(), endRequested: c.finSent, finSent: c.finSent, endReceived: c.finReceived, connecting: false }
    const legs = { [this.socketLeg]: socketLeg, [this.channelLeg]: channelLeg } as Record<Leg, LegState>
    return { fds: [copy], state: { legs, bytesToTarget: this.bytesToTarget, bytesToClient: this.bytesToClient, clientAddress, targetAddress, pair: c.exportState() }, reset: () => this.#resetDetached() }
  }

  /**
   * Detached, then lost (the new process died holding it): the other end of the pair is told by
   * an RST. A far end may have moved the session to the dead process's link at its RESUME: named
   * by its token again, it comes back to this link first.
   */
  #resetDetached(): void {
    const c = this.channel
    if (this.channelLeg === 'target') c.link?.send(c.resumeFrame())
    c.rst()
  }

  settling(): boolean {
    return this.#movable() && this.#settlingNow()
  }

  /** Bytes (or a FIN) still on their way into the socket. */
  #settlingNow(): boolean {
    const s = this.socket!
    return s.writableLength > 0 || (s.writableEnded && !s.writableFinished)
  }

  /**
   * Established, relaying, not in the middle of a resume, and each direction's ending relayed
   * across (a FIN read from the socket was sent on as the channel's, and the channel's as the
   * socket's): the state is then whole in the channel's flags and the socket's.
   */
  #movable(): boolean {
    const s = this.socket
    const c = this.channel
    if (!this.#channelOpen || this.#channelConnecting || !this.#relaying || s === undefined || s.destroyed || s.connecting || c.resuming) return false
    return (this.#socketReadEnded || s.readableEnded) === c.finSent && (this.#socketFinSent || s.writableEnded) === c.finReceived
  }

  pair(): PairState {
    const link = this.channel.link
    return { link: link === undefined || this.channel.resuming ? null : link.peer, resumes: this.channel.resumes }
  }

  // From the socket leg.

  onSocketConnect(): void {
    // Far end: the target is up; the near end learns it from the first acknowledgement.
    this.channel.sendAck()
    this.events.onTargetConnect()
  }

  /** A read through the read pool (onread): before the session relays it waits, and reading stops (false). */
  onSocketRead(piece: Buffer): boolean {
    if (this.#relaying) {
      this.onSocketData(piece)
      return true
    }
    this.#early.push(piece)
    if (this.#readToEnd) return true
    this.#unread()
    return false
  }

  onSocketData(chunk: Buffer): void {
    if (this.socketLeg === 'client') this.bytesToTarget += chunk.length
    else this.bytesToClient += chunk.length
    if (!this.#channelOpen) return
    this.channel.write(chunk)
    if (this.channel.full && !this.#readToEnd) {
      this.#pauseSocket(this.socket!)
      this.#unread()
    }
  }

  /** A read by the pump (only once relaying). */
  onPumpRead(piece: Buffer): void {
    this.onSocketData(piece)
  }

  onPumpFault(err: unknown): void {
    this.events.fail(err)
  }

  /** Node's socket closed: the pump's duplicate goes too (else the connection would live on). */
  onSocketClose(): void {
    this.#reader?.close()
    this.events.onClose(this.socketLeg)
  }

  onSocketEnd(): void {
    this.events.onEnd(this.socketLeg)
    // Adopted with our FIN sent by the old process: Node never ended this socket, so it would
    // wait for that before closing it; both directions are done now.
    if (this.#socketFinSent) this.socket?.destroy()
  }

  onSocketDrain(): void {
    this.channel.acknowledge()
  }

  // From the channel leg (link frames).

  onChannelFrame(type: FrameType, payload: Buffer): void {
    if (!this.#channelOpen) return
    switch (type) {
      case FRAME.ACK: {
        if (!this.channel.onAck(readOffset(payload))) {
          this.#lost('an acknowledgement beyond what was sent')
          return
        }
        if (this.#channelConnecting) {
          this.#channelConnecting = false
          this.events.onTargetConnect()
          return
        }
        this.#closeChannelIfDone()
        this.#readAgain()
        return
      }
      case FRAME.FIN:
        // A FIN sent again after a resume, already had.
        if (this.channel.finReceived) return
        if (readOffset(payload) !== this.channel.received) {
          this.#lost('a FIN at the wrong offset')
          return
        }
        this.channel.finReceived = true
        // At once: the peer's channel is done only once it knows its FIN arrived.
        this.channel.sendAck()
        this.events.onEnd(this.channelLeg)
        this.#closeChannelIfDone()
        return
      case FRAME.RST:
        if (this.channel.resuming) {
          this.#lost('the far end refused the resume (it no longer knows the session)')
          return
        }
        this.#channelOpen = false
        this.events.onError(this.channelLeg, 'ECONNRESET')
        this.events.onClose(this.channelLeg)
        return
      default:
        this.#lost(`frame type ${type} on an open channel`)
    }
  }

  onChannelData(piece: Buffer, link: PairLink): void {
    if (!this.#channelOpen || this.channel.finReceived) return
    if (this.channelLeg === 'client') this.bytesToTarget += piece.length
    else this.bytesToClient += piece.length
    this.channel.onReceived(piece.length)
    const s = this.socket
    if (s === undefined || s.destroyed) return
    if (this.#writeSocket(s, piece, link)) this.channel.acknowledge()
  }

  /** A piece from the channel into the socket (writeDirect); whether the socket took it all (no backpressure). */
  #writeSocket(s: Socket, piece: Buffer, link: PairLink): boolean {
    const taken = writeDirect(s, this.#deps.direct ? handleFd(s) : undefined, piece)
    if (taken === 'kernel') return true
    // The piece is a view of the link's buffer, reused for the next record unless the socket
    // keeps it: queued (not all taken by the kernel at once, or the socket still connecting).
    if (s.writableLength > 0) link.keepPiece()
    return taken
  }

  /** Near end: the far end answered the RESUME with what it received; what it lacks goes again. */
  onResumed(peerReceived: number): void {
    this.channel.resuming = false
    this.channel.lostAt = undefined
    this.channel.resumes++
    this.#deps.resumed()
    if (!this.channel.replay(peerReceived)) {
      this.#lost('the peer resumed at an offset never sent')
      return
    }
    this.#closeChannelIfDone()
    this.#readAgain()
  }

  /** Far end: a RESUME on a new link: answer with what was received here, and send what the near end lacks. */
  resumeOn(link: PairLink, peerReceived: number): void {
    this.channel.link = link
    this.channel.lostAt = undefined
    this.channel.resumes++
    this.#deps.resumed()
    link.send(this.channel.resumeFrame())
    if (!this.channel.replay(peerReceived)) {
      this.#lost('the peer resumed at an offset never sent')
      return
    }
    this.#closeChannelIfDone()
    this.#readAgain()
  }

  /**
   * Credit came back (an ACK, or a resume that counted the peer's bytes as acknowledged): the
   * socket leg paused for lack of it is read again. After a resume no ACK may follow (the peer
   * may have had everything), so this is not left to the next ACK.
   */
  #readAgain(): void {
    const s = this.socket
    const paused = this.#reader !== undefined ? this.#reader.paused : s?.isPaused()
    if (this.#relaying && !this.#socketReadEnded && s !== undefined && !this.channel.full && paused === true) this.#readSocket(s)
  }

  /** The link under the channel is gone and no other came within the resume window (or none will). */
  onLinkLost(detail = 'the pair link did not come back within the resume window'): void {
    this.#lost(detail)
  }

  #lost(detail: string): void {
    if (!this.#channelOpen) return
    this.#deps.logger.debug({ session: this.events.id, detail }, 'pair channel lost')
    this.#channelOpen = false
    this.events.onError(this.channelLeg, PAIR_LOST)
    this.events.onClose(this.channelLeg)
  }

  /** Both directions ended, and our FIN is known to have arrived: the channel is done. */
  #closeChannelIfDone(): void {
    const c = this.channel
    if (this.#channelOpen && c.finSent && c.finReceived && c.finAcked) this.#closeChannel()
  }

  /** Closed by the session's own call: told on the next tick (never inside that call). */
  #closeChannel(): void {
    this.#channelOpen = false
    process.nextTick(pairChannelOnClose, this)
  }

  #adopt(socket: Socket): void {
    this.socket = socket
    ;(socket as PairSocket)[kPair] = this
    socket.on('error', pairSocketOnError)
    socket.on('close', pairSocketOnClose)
  }
}

function ignoreError(): void {}

function pairChannelOnClose(t: PairTransport): void {
  try {
    t.events.onClose(t.channelLeg)
  } catch (err) {
    t.events.fail(err)
  }
}

/** A socket's event, told to its transport; whatever it throws (a bug) fails that one session. */
function onSocket(socket: PairSocket, what: (t: PairTransport) => void): void {
  const t = socket[kPair]
  try {
    what(t)
  } catch (err) {
    t.events.fail(err)
  }
}

function pairSocketOnConnect(this: PairSocket): void {
  onSocket(this, (t) => t.onSocketConnect())
}

/**
 * Node's onread for a plain leg: its reads go through the read pool (read-pool.ts) to its
 * transport (`socket`: the socket, once made). What Node read of a socket without it (one
 * adopted, or accepted as a socket) comes as 'data'.
 */
function plainLegOnread(socket: () => Socket): { buffer: Buffer; callback: (n: number) => boolean } {
  return readPool.onread((piece) => {
    const t = (socket() as PairSocket)[kPair]
    try {
      return t.onSocketRead(piece)
    } catch (err) {
      t.events.fail(err)
      return false
    }
  })
}

function pairSocketOnData(this: PairSocket, chunk: Buffer): void {
  onSocket(this, (t) => t.onSocketData(chunk))
}

function pairSocketOnEnd(this: PairSocket): void {
  onSocket(this, (t) => t.onSocketEnd())
}

function destroySocket(this: Socket): void {
  this.destroy()
}

function pairSocketOnDrain(this: PairSocket): void {
  onSocket(this, (t) => t.onSocketDrain())
}

function pairSocketOnError(this: PairSocket, err: NodeJS.ErrnoException): void {
  onSocket(this, (t) => t.events.onError(t.socketLeg, err.code ?? err.message))
}

function pairSocketOnClose(this: PairSocket): void {
  onSocket(this, (t) => t.onSocketClose())
}

/** What a PairTransport needs from its route's PairTransports. */
interface PairTransportDeps {
  sockets: SocketControl
  logger: Logger
  /** Near end: send the channel's OPEN now, or once the link is up. */
  open(t: PairTransport): void
  /** The session is over: its channel is forgotten. */
  forget(t: PairTransport): void
  /** A session resumed on a new link (counted: ka_proxy_pair_resumes_total). */
  resumed(): void
  /** Near end: a session reset while it had no link: its RESUME and RST go on the next one. */
  resetLater(channel: Channel): void
  /** Sessions whose socket leg is not read (see checkPaused). */
  unread: Set<PairTransport>
  /** Plain legs are written straight to the kernel (writeDirect): not with --no-native. */
  direct: boolean
}

/** What a far end's route does with an OPEN: a session of its listener, or undefined if refused. */
export type OpenSession = (open: (events: TransportEvents) => Transport) => boolean

export interface PairTransportsDeps {
  sockets: SocketControl
  logger: Logger
  refusals: RefusalLog
  /** TCP keepalive for the links' sockets: the route's target leg's at the near end, client leg's at the far end. */
  linkKeepalive: KeepaliveSettings
  /** A session resumed on a new link. */
  resumed?(): void
}

/** A route's pair links and the channels on them (see the header). */
export class PairTransports implements Transports, LinkEvents {
  readonly kind = 'pair'
  /** Handles: the near end builds each client's socket itself, reading through the read pool. */
  readonly takesHandles = true
  readonly #pair: PairOptions
  readonly #deps: PairTransportDeps
  readonly #logger: Logger
  /** Channels by link (the far end's ids are the near end's, unique per link only). */
  readonly #channels = new Map<PairLink | undefined, Map<number, PairTransport>>()
  readonly #dialer: LinkDialer | undefined
  readonly #server: PairLinkServer | undefined
  #openSession: OpenSession | undefined
  #nextId = 1
  /** Far end: every session's channel by its token (RESUME finds it whatever link it was on). */
  readonly #byToken = new Map<string, PairTransport>()
  /** Far end: channels whose link was lost, waiting for a RESUME (the near end keeps its own under no link). */
  readonly #detached = new Set<PairTransport>()
  /** Near end: channels reset while they had no link; told on the next (their peer forgets them past the window anyway). */
  readonly #resetLater = new Set<Channel>()
  /** Resume-window checks pending, one per lost link (and per burst of adopted sessions). */
  readonly #expiries = new Set<NodeJS.Timeout>()
  /** Sessions adopted before this (performance.now()) are covered by a check already pending. */
  #adoptedCheckUntil = 0
  /** Sessions whose socket leg is not read: waiting for the far end (or the link), or for credit. */
  readonly #unread = new Set<PairTransport>()

  constructor(pair: PairOptions, deps: PairTransportsDeps) {
    this.#pair = pair
    this.#logger = deps.logger
    this.#deps = {
      sockets: deps.sockets,
      logger: deps.logger,
      open: (t) => this.#open(t),
      forget: (t) => {
        this.#unread.delete(t)
        this.#channels.get(t.channel.link)?.delete(t.channel.id)
        this.#detached.delete(t)
        this.#byToken.delete(t.channel.token.toString('hex'))
      },
      resumed: () => deps.resumed?.(),
      resetLater: (channel) => this.#resetLater.add(channel),
      unread: this.#unread,
      direct: deps.sockets.native,
    }
    const linkOptions: LinkOptions = {
      keys: pairKeys(pair.secret),
      heartbeatMs: pair.heartbeat * 1000,
      logger: deps.logger,
      // Sealed records need the native helper; --no-native keeps the links' frames in TLS.
      records: deps.sockets.native,
      tune: (socket) => {
        deps.sockets.set(socket, deps.linkKeepalive)
        deps.sockets.notSentLowat(socket, LINK_NOTSENT_LOWAT)
      },
    }
    if (pair.role === 'near') {
      const { host, port } = pair.endpoint
      this.#dialer = new LinkDialer({ host: host!, port }, linkOptions, this)
      this.#dialer.start()
    } else {
      this.#server = new PairLinkServer(linkOptions, deps.refusals, this)
    }
  }

  /**
   * Far end: accepts links on the route's pair address (`fd`: a listening socket an upgrade handed
   * over, listened on as it is); OPEN frames become sessions through `openSession`.
   */
  async listen(host: string | undefined, port: number, openSession: OpenSession, fd?: number): Promise<AddressInfo> {
    this.#openSession = openSession
    return this.#server!.listen(host, port, fd)
  }

  /** Far end: the pair address's listening descriptor (for an upgrade); undefined when not listening. */
  get listenFd(): number | undefined {
    return this.#server?.fd
  }

  /** Far end: stops accepting links (an upgrade's commit, a reload's unbind); the links stay. */
  stopListening(): void {
    this.#server?.stopListening()
  }

  /**
   * Carries on a paired session handed over by an upgrade (or taken back when the new process
   * refused it): its socket is `fds[0]` (`own`: received for it) or a duplicate of it, its channel
   * as it was; a throw leaves `fds` the caller's. Near end: resumed
   * on the link now if one is up, else on the next. Far end: it waits for the near end's RESUME
   * (which comes once the process that had it closed its links). Either way the resume window
   * counts from when it was lost, or from now.
   */
  adopt(fds: readonly number[], state: TransportState, events: TransportEvents, own = false): Transport {
    const pair = state.pair
    const near = this.#pair.role === 'near'
    const socketLeg: Leg = near ? 'client' : 'target'
    if (pair === undefined || fds.length !== 1) throw new Error('not a paired session (a channel and one socket)')
    const hex = pair.token.toString('hex')
    if (this.#byToken.has(hex)) throw new Error('a paired session of this token is here already')
    const channel = Channel.restore(pair, state.legs[near ? 'target' : 'client'].queued)
    const native = loadNative()
    if (!native.ok) throw new Error('adopting a paired session needs the native helper')
    const fd = own ? fds[0]! : native.binding.dupFd(fds[0]!)
    let socket: Socket
    try {
      socket = new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true })
    } catch (err) {
      if (!own) native.binding.closeFd(fd)
      throw err
    }
    // Read only once relay() says so (what arrives meanwhile waits in the kernel or Node's buffer).
    socket.pause()
    const t = new PairTransport(this.#deps, events, channel, socketLeg, { address: state.clientAddress }, near ? state.targetAddress : undefined, { socket, state })
    channel.lostAt = performance.now() - (pair.lostMs ?? 0)
    this.#byToken.set(hex, t)
    this.#unread.add(t)
    if (near) {
      // New sessions here are numbered after it: ids are unique per link at the far end.
      if (pair.id >= this.#nextId) this.#nextId = pair.id >= 0xffffffff ? 1 : pair.id + 1
      const link = this.#dialer!.link
      channel.link = link
      this.#channelsOf(link).set(channel.id, t)
      if (link !== undefined) {
        channel.resuming = true
        link.send(channel.resumeFrame())
      }
    } else {
      this.#detached.add(t)
    }
    // One check for the sessions adopted within ADOPTED_CHECK_MS (thousands come in a burst).
    const now = performance.now()
    if (now >= this.#adoptedCheckUntil) {
      this.#adoptedCheckUntil = now + ADOPTED_CHECK_MS
      this.#expireAfterWindow(ADOPTED_CHECK_MS)
    }
    return t
  }

  /**
   * After an upgrade that moved this far end's sessions: its links close, so the near ends
   * connect again (to the new process, on the listening socket handed over) and resume them
   * there at once rather than after a heartbeat timeout. A session that stayed here (still
   * connecting, ending, or refused by the new process) cannot resume anywhere: it ends now
   * (pair_lost). How many did.
   */
  closeLinks(): number {
    const left = [...this.#channels.values()].flatMap((m) => [...m.values()]).concat([...this.#detached])
    for (const link of this.#server?.links ?? []) link.close()
    for (const t of left) {
      try {
        t.onLinkLost('the pair links were closed after an upgrade')
      } catch (err) {
        t.events.fail(err)
      }
    }
    return left.length
  }

  /** Near end: a client accepted on the route's listener; its target leg will be a channel. */
  accept(client: Accepted, events: TransportEvents): Transport {
    const id = this.#nextId
    this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1
    const channel = new Channel(id, randomBytes(TOKEN_BYTES), undefined)
    const { host, port } = this.#pair.endpoint
    const socket: Socket = socketOf(client, { onread: plainLegOnread(() => socket) })
    return new PairTransport(this.#deps, events, channel, 'client', { socket, onread: !isSocket(client) }, formatEndpoint(host, port))
  }

  /** Links up now: the near end's one (0 or 1), or the far end's accepted ones. */
  get linksUp(): number {
    if (this.#dialer !== undefined) return this.#dialer.link === undefined ? 0 : 1
    let n = 0
    for (const link of this.#server?.links ?? []) if (link.state === 'up') n++
    return n
  }

  /**
   * A socket leg is not read while its session waits for the far end (the link may be down for
   * the whole resume window) or while its channel has no credit; the kernel reports a reset or a
   * keepalive timeout only to a reader, so those legs are checked for death.
   */
  checkPaused(): void {
    for (const t of this.#unread) {
      try {
        if (t.deadReason(t.socketLeg) !== undefined) {
          this.#unread.delete(t)
          t.onUnreadLegDead()
        }
      } catch (err) {
        t.events.fail(err)
      }
    }
  }

  /** Stops dialing and accepting, and closes the links (their sessions are lost). */
  async close(): Promise<void> {
    for (const timer of this.#expiries) clearTimeout(timer)
    this.#dialer?.stop()
    // First the links: a TLS server's close waits for its connections to end.
    const closed = this.#server?.close()
    for (const link of this.#server?.links ?? []) link.close()
    await closed
  }

  #channelsOf(link: PairLink | undefined): Map<number, PairTransport> {
    let m = this.#channels.get(link)
    if (m === undefined) this.#channels.set(link, (m = new Map()))
    return m
  }

  /** Near end: a session's OPEN goes on the link if there is one; otherwise it waits for it. */
  #open(t: PairTransport): void {
    const link = this.#dialer!.link
    t.channel.link = link
    this.#channelsOf(link).set(t.channel.id, t)
    if (link === undefined) return
    t.channel.opened = true
    link.send(t.channel.openFrame())
  }

  onLinkUp(link: PairLink): void {
    if (link.role !== 'near') return
    // Sessions that arrived while there was no link open their channels now; those whose link
    // was lost resume theirs (the far end answers with what it received, and both replay).
    for (const channel of this.#resetLater) {
      channel.link = link
      link.send(channel.resumeFrame())
      channel.rst()
    }
    this.#resetLater.clear()
    const waiting = this.#channels.get(undefined)
    if (waiting === undefined) return
    this.#channels.delete(undefined)
    const on = this.#channelsOf(link)
    for (const [id, t] of waiting) {
      const channel = t.channel
      channel.link = link
      on.set(id, t)
      if (channel.opened) {
        channel.resuming = true
        link.send(channel.resumeFrame())
      } else {
        channel.opened = true
        link.send(channel.openFrame())
      }
    }
  }

  onLinkControl(link: PairLink, type: FrameType, channel: number, payload: Buffer): void {
    const t = this.#channels.get(link)?.get(channel)
    if (type === FRAME.OPEN) {
      if (link.role !== 'far' || t !== undefined) {
        this.#logger.warn({ peer: link.peer, channel }, 'pair link: OPEN of a channel already open, or at the near end; link closed')
        this.onLinkDown(link)
        link.close()
        return
      }
      this.#accept(link, channel, payload)
      return
    }
    if (type === FRAME.RESUME) {
      if (link.role === 'far') this.#resume(link, channel, payload)
      else if (t?.channel.resuming === true) t.onResumed(readOffset(payload, TOKEN_BYTES))
      return
    }
    // A frame for a channel already forgotten (its session ended here first): nothing to do.
    t?.onChannelFrame(type, payload)
  }

  onLinkData(link: PairLink, channel: number, piece: Buffer): void {
    this.#channels.get(link)?.get(channel)?.onChannelData(piece, link)
  }

  /**
   * A link is gone: its sessions carry on without one (their plain legs see nothing; what they
   * send is kept, up to the credit window) until a new link resumes them, or the resume window
   * ends them (pair_lost).
   */
  onLinkDown(link: PairLink): void {
    const lost = this.#channels.get(link)
    this.#channels.delete(link)
    if (lost === undefined || lost.size === 0) return
    const now = performance.now()
    for (const t of lost.values()) {
      t.channel.link = undefined
      // A resume cut short by another loss keeps counting from the first.
      t.channel.lostAt ??= now
      if (link.role === 'near') this.#channelsOf(undefined).set(t.channel.id, t)
      else this.#detached.add(t)
    }
    this.#expireAfterWindow()
  }

  /** A check for sessions past the resume window, one window (and `laterMs`) from now. */
  #expireAfterWindow(laterMs = 0): void {
    const timer = setTimeout(() => {
      this.#expiries.delete(timer)
      this.#expire()
    }, this.#pair.resumeWindow * 1000 + laterMs)
    this.#expiries.add(timer)
  }

  /** Sessions whose link was lost longer than the resume window ago end (pair_lost, both plain legs reset). */
  #expire(): void {
    const deadline = performance.now() - this.#pair.resumeWindow * 1000 + 1
    for (const c of this.#resetLater) if (c.lostAt !== undefined && c.lostAt <= deadline) this.#resetLater.delete(c)
    const waiting = this.#pair.role === 'near' ? (this.#channels.get(undefined)?.values() ?? []) : this.#detached
    const expired = [...waiting].filter((t) => t.channel.lostAt !== undefined && t.channel.lostAt <= deadline)
    for (const t of expired) {
      try {
        t.onLinkLost()
      } catch (err) {
        t.events.fail(err)
      }
    }
  }

  /** Far end: a RESUME names a session by its token; an unknown token is refused with an RST. */
  #resume(link: PairLink, id: number, payload: Buffer): void {
    const t = this.#byToken.get(payload.subarray(0, TOKEN_BYTES).toString('hex'))
    if (t === undefined) {
      this.#logger.warn({ peer: link.peer, channel: id }, 'pair resume refused: no session has this token')
      link.send(frameHeader(FRAME.RST, id, 0))
      return
    }
    // The near end may see its old link die before the far end does: the session moves.
    const old = t.channel.link
    if (old !== undefined) this.#channels.get(old)?.delete(t.channel.id)
    this.#detached.delete(t)
    this.#channelsOf(link).set(id, t)
    this.#logger.info({ session: t.events.id, peer: link.peer, lostMs: t.channel.lostAt === undefined ? 0 : Math.round(performance.now() - t.channel.lostAt) }, 'pair session resumed')
    t.resumeOn(link, readOffset(payload, TOKEN_BYTES))
  }

  /** Far end: an OPEN becomes a session of the listener, or an RST when it refuses one. */
  #accept(link: PairLink, id: number, token: Buffer): void {
    const channel = new Channel(id, Buffer.from(token), link)
    let transport: PairTransport | undefined
    const opened = this.#openSession?.((events) => (transport = new PairTransport(this.#deps, events, channel, 'target', { address: link.peer })))
    if (opened === true && transport !== undefined) {
      this.#channelsOf(link).set(id, transport)
      this.#byToken.set(channel.token.toString('hex'), transport)
    } else {
      channel.rst()
    }
  }
}
