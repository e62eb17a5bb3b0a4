// One session's stream over a pair link, at one end: the bytes of each direction numbered from 0,
// what was sent kept until the peer acknowledges it (the credit window, and what a resume will
// replay), what was received acknowledged once the plain leg took it. FIN carries the offset it
// comes after; RST ends the channel at once. The channel knows frames and offsets, not sockets
// (transport.ts) nor links' lives (link.ts).

import { ACK_DELAY_MS, FRAME, frameHeader, MAX_DATA, offsetFrame, TOKEN_BYTES, WINDOW } from './protocol.ts'
import type { PairLink } from './link.ts'
import { readPool } from './read-pool.ts'
import type { PairChannelState } from '../transport/transport.ts'

export class Channel {
  readonly id: number
  /** 128 random bits naming the session to both ends (OPEN, and RESUME on a new link). */
  readonly token: Buffer
  /** The link whose turn list holds it (PairLink.schedule); stale once it moved to another link. */
  scheduledOn: PairLink | undefined
  /** Bytes sent so far, and how many of them the peer acknowledged. */
  sent = 0
  acked = 0
  /** Bytes received so far, and how many of them were acknowledged to the peer. */
  received = 0
  ackedToPeer = 0
  finSent = false
  finReceived = false
  /**
   * The peer acknowledged our FIN. A FIN takes one offset after the last byte, as in TCP: a channel
   * is done only once its FIN is known to have arrived, since a link lost before that must be
   * able to resume it (a channel forgotten too early would refuse the peer's RESUME).
   */
  finAcked = false
  /** Near end: OPEN was sent (on a new link, it RESUMEs instead). */
  opened = false
  /** Near end: RESUME sent, its answer not yet come. */
  resuming = false
  /** How many times it resumed on a new link. */
  resumes = 0
  /** When its link was lost (performance.now()); undefined while it has one. */
  lostAt: number | undefined
  /** Sent and not acknowledged, in order: the bytes from `acked` to `sent`. */
  readonly #unacked: Buffer[] = []
  /**
   * The tail of those not yet framed onto the link, in order, then a FIN or an RST: the link
   * takes one frame at a time from each channel in turn (PairLink.schedule), so a bulk channel's
   * bytes wait here, not ahead of every other channel's in the link's socket.
   */
  readonly #pending: Buffer[] = []
  #finPending = false
  #rstPending = false
  #link: PairLink | undefined
  /** An ACK waits: for the end of this turn, or for the delayed ACKs' timer. */
  #ackQueued: 'no' | 'turn' | 'timer' = 'no'
  /** When this channel's last ACK went (performance.now()). */
  #lastAckAt = -Infinity

  constructor(id: number, token: Buffer, link: PairLink | undefined) {
    if (token.length !== TOKEN_BYTES) throw new Error(`a channel token is ${TOKEN_BYTES} bytes`)
    this.id = id
    this.token = token
    this.#link = link
  }

  /** The link it travels on; undefined while there is none. */
  get link(): PairLink | undefined {
    return this.#link
  }

  /** On another link what was waiting for the old one goes only as the resume's replay says. */
  set link(link: PairLink | undefined) {
    if (link === this.#link) return
    this.#link = link
    this.#pending.length = 0
    this.#finPending = false
    this.#rstPending = false
  }

  /**
   * A channel handed over by an upgrade (or taken back): its numbering as it was, and `unacked`,
   * the bytes from `acked` to `sent`, kept until the peer acknowledges them (a resume replays
   * what it lacks). It waits for a link; the RESUME on it says the rest. Throws on a state that
   * does not add up.
   */
  static restore(state: PairChannelState, unacked: Buffer): Channel {
    const c = new Channel(state.id, state.token, undefined)
    if (state.acked > state.sent || unacked.length !== state.sent - state.acked) throw new Error('a paired session whose unacknowledged bytes do not match its offsets')
    c.sent = state.sent
    c.acked = state.acked
    c.received = state.received
    // What the peer was told before the hand-over; the RESUME tells it again.
    c.ackedToPeer = state.received
    c.finSent = state.finSent
    c.finReceived = state.finReceived
    c.finAcked = state.finAcked
    c.opened = true
    c.resumes = state.resumes
    if (unacked.length > 0) c.#unacked.push(unacked)
    return c
  }

  /** What an upgrade hands over (with `unackedBytes`): see restore. */
  exportState(): PairChannelState {
    const now = performance.now()
    return {
      id: this.id,
      token: this.token,
      sent: this.sent,
      acked: this.acked,
      received: this.received,
      finSent: this.finSent,
      finReceived: this.finReceived,
      finAcked: this.finAcked,
      resumes: this.resumes,
      lostMs: this.lostAt === undefined ? null : Math.round(now - this.lostAt),
    }
  }

  /** The bytes sent and not acknowledged, in one buffer. */
  unackedBytes(): Buffer {
    return Buffer.concat(this.#unacked)
  }

  /** Bytes sent that the peer has not acknowledged. */
  get unacknowledged(): number {
    return this.sent - this.acked
  }

  /** No credit left: the plain leg feeding it must stop being read. */
  get full(): boolean {
    return this.unacknowledged >= WINDOW
  }

  /** Sends `data` (in frames of at most MAX_DATA, in turn with other channels) and keeps it until acknowledged. */
  write(data: Buffer): void {
    this.#unacked.push(data)
    this.sent += data.length
    const link = this.#link
    // While a RESUME waits for its answer the bytes wait too: the peer takes them as following
    // what it had, so they go after the replay of what it lacks (replay sends every byte kept).
    if (link === undefined || this.resuming) return
    this.#pending.push(data)
    link.schedule(this)
  }

  /** Whether a frame waits for this channel's turn on its link. */
  get hasFrames(): boolean {
    return this.#pending.length > 0 || this.#finPending || this.#rstPending
  }

  /** The next frame for the link, as its header and DATA payload: bytes first, then the FIN or RST after them. */
  takeFrame(): [Buffer, Buffer | undefined] | undefined {
    const first = this.#pending[0]
    if (first !== undefined) {
      let piece = first
      if (first.length > MAX_DATA) {
        piece = first.subarray(0, MAX_DATA)
        this.#pending[0] = first.subarray(MAX_DATA)
      } else {
        this.#pending.shift()
      }
      return [frameHeader(FRAME.DATA, this.id, piece.length), piece]
    }
    if (this.#finPending) {
      this.#finPending = false
      return [offsetFrame(FRAME.FIN, this.id, this.sent), undefined]
    }
    if (this.#rstPending) {
      this.#rstPending = false
      return [frameHeader(FRAME.RST, this.id, 0), undefined]
    }
    return undefined
  }

  /**
   * On a new link: the peer had received `peerReceived` bytes (all it ever will of the old link),
   * so those count as acknowledged and the rest is sent again, then the FIN if ours was sent.
   * false when the peer claims bytes never sent (nothing is replayed).
   */
  replay(peerReceived: number): boolean {
    if (!this.onAck(peerReceived)) return false
    const link = this.#link
    if (link === undefined) return true
    this.#pending.length = 0
    // One by one: a resume after many small reads can keep more pieces than a call takes arguments.
    for (const data of this.#unacked) this.#pending.push(data)
    this.#finPending = this.finSent && !this.finAcked
    if (this.hasFrames) link.schedule(this)
    return true
  }

  /** RESUME: this channel's token and what it received, so the peer replays from there. */
  resumeFrame(): Buffer {
    const b = frameHeader(FRAME.RESUME, this.id, TOKEN_BYTES + 6, TOKEN_BYTES + 6)
    this.token.copy(b, 9)
    b.writeUIntBE(this.#receivedUpTo, 9 + TOKEN_BYTES, 6)
    // What the peer learns from RESUME it need not hear again as an ACK.
    this.ackedToPeer = this.#receivedUpTo
    return b
  }

  /** OPEN: a new session, named by this channel's token. */
  openFrame(): Buffer {
    const b = frameHeader(FRAME.OPEN, this.id, TOKEN_BYTES, TOKEN_BYTES)
    this.token.copy(b, 9)
    return b
  }

  /** This direction ends after the bytes sent so far. */
  fin(): void {
    if (this.finSent) return
    this.finSent = true
    // Resuming: the replay sends it, after the bytes before it.
    const link = this.#link
    if (this.resuming || link === undefined) return
    this.#finPending = true
    link.schedule(this)
  }

  /** The channel is reset: as a TCP reset, it drops what waits to be sent and goes next in the channel's turn. */
  rst(): void {
    const link = this.#link
    if (link === undefined) return
    this.#pending.length = 0
    this.#finPending = false
    this.#rstPending = true
    link.schedule(this)
  }

  /** The peer acknowledged every byte before `offset`: credit returns and the kept bytes go. */
  onAck(offset: number): boolean {
    if (this.finSent && offset === this.sent + 1) {
      this.finAcked = true
      offset = this.sent
    }
    if (offset < this.acked || offset > this.sent) return false
    let drop = offset - this.acked
    this.acked = offset
    const kept = this.#unacked
    while (drop > 0) {
      const first = kept[0]!
      if (first.length <= drop) {
        kept.shift()
        // Acknowledged, so sent: its room in the read pool (if it was read through it) is free.
        readPool.release(first)
        drop -= first.length
      } else {
        kept[0] = first.subarray(drop)
        drop = 0
      }
    }
    return true
  }

  /** `n` bytes arrived (the transport hands them to the plain leg). */
  onReceived(n: number): void {
    this.received += n
  }

  /**
   * The plain leg took everything received so far: acknowledged at the end of this turn of the
   * event loop (one ACK for all the pieces one read brought); or, when this channel's last ACK
   * went less than ACK_DELAY_MS ago and less than a frame (MAX_DATA) waits for one, within
   * ACK_DELAY_MS (one ACK for the many small reads of a busy interactive session); at once past
   * a quarter window. A bulk session acknowledges every turn, as before there was a delay.
   */
  acknowledge(): void {
    const pending = this.received - this.ackedToPeer
    if (pending === 0) return
    if (pending >= WINDOW / 4) {
      this.sendAck()
      return
    }
    if (this.#ackQueued === 'turn') return
    if (pending >= MAX_DATA || performance.now() - this.#lastAckAt >= ACK_DELAY_MS) {
      // Also when the timer has it: whichever comes first sends it, the other finds nothing to send.
      this.#ackQueued = 'turn'
      process.nextTick(channelSendAck, this)
    } else if (this.#ackQueued === 'no') {
      this.#ackQueued = 'timer'
      delayedAcks.add(this)
    }
  }

  /** An acknowledgement that waits (acknowledge) goes now; none when another went meanwhile. */
  sendQueuedAck(): void {
    if (this.#ackQueued !== 'no') this.sendAck()
  }

  sendAck(): void {
    this.#ackQueued = 'no'
    const link = this.#link
    const upTo = this.#receivedUpTo
    // Without a link the RESUME on the next one says it all.
    if (link === undefined || (upTo === this.ackedToPeer && upTo !== 0)) return
    this.ackedToPeer = upTo
    this.#lastAckAt = performance.now()
    link.send(offsetFrame(FRAME.ACK, this.id, upTo))
  }

  /** What an acknowledgement covers: the bytes received, and the FIN after them once it came. */
  get #receivedUpTo(): number {
    return this.received + (this.finReceived ? 1 : 0)
  }
}

function channelSendAck(channel: Channel): void {
  channel.sendQueuedAck()
}

/**
 * The acknowledgements that wait (Channel.acknowledge), sent together by one timer within
 * ACK_DELAY_MS of the first. Unreferenced: a pending ACK never keeps a stopping process alive.
 */
class DelayedAcks {
  #channels: Channel[] = []
  #timer: NodeJS.Timeout | undefined

  add(channel: Channel): void {
    this.#channels.push(channel)
    this.#timer ??= setTimeout(sendDelayedAcks, ACK_DELAY_MS, this).unref()
  }

  send(): void {
    const channels = this.#channels
    this.#channels = []
    this.#timer = undefined
    for (const channel of channels) channel.sendQueuedAck()
  }
}

function sendDelayedAcks(acks: DelayedAcks): void {
  acks.send()
}

/** This thread's (a worker thread has its own). */
const delayedAcks = new DelayedAcks()
