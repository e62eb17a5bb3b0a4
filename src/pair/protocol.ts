// Paired mode's wire protocol, and the design it serves.
//
// Two ka-proxies: the near end (next to the application: a plain listener whose sessions' target
// leg is a channel over a pair link) and the far end (next to the server: a pair listener whose
// sessions' client leg is a channel). The plain legs (app <-> near, far <-> server) are ordinary
// sessions with the policy of session.ts; only the leg between the two ends is new.
//
// Design: sessions multiplexed over one link per (near route, far address), with per-session
// credit flow control; not one link per session. Measured on the 2-core machine the targets are
// set on (Node 20, loopback, TLS 1.3 with a pre-shared key, AES-128-GCM; 1,000 connections):
// - An idle TLS socket costs 43.5 KiB of RSS per end (a plain TCP socket: 6.5 KiB). A link per
//   session would be 2.7 times the 16 KiB budget for an idle paired session before any session
//   state; multiplexed, one link's 43 KiB is shared by all its sessions, and an idle session holds
//   its plain socket, its session and channel objects, and no buffer (nothing unacknowledged).
// - A handshake costs 1.3 ms of wall time and 1.5 ms of CPU (both ends together) on loopback, plus
//   a network round trip and our hello. A link per session pays it at every session's open, and
//   after a NAT flush N sessions need N handshakes on each end's one thread (1,000 sessions: 1.5 s
//   of CPU) against a target of heartbeat x 3 + 2 s for all of them to flow again. Multiplexed,
//   one handshake resumes every session of the link.
// - Built that way, 2,000 idle paired sessions added 9.6 KiB of RSS each at the near end and
//   6.7 KiB at the far end (one measurement: client sockets made idle after one echoed byte).
// - One TLS stream moves 600 MB/s with both of its ends in one process on one core; between two
//   processes a Node TLS relay moved 130-340 MB/s, and its 16 KiB pieces and their buffers made
//   the full garbage collections behind the pair's tail latency. So after the hellos the frames
//   leave TLS for records sealed natively (records.ts): a plain relay sealing that way moved
//   370 MB/s where the TLS one moved 150, in the same run; with the records' buffers and the
//   plain legs' reads reused too (records.ts, read-pool.ts), a pair moves 580-700 MB/s.
// The price of multiplexing is head-of-line blocking: a bulk session must not stall an interactive
// one. So the receiver never stops reading the link for one session's sake, and each session has
// credit: a sender has at most WINDOW bytes unacknowledged per direction, and the receiver
// acknowledges bytes once its plain leg's socket took them (write() without backpressure, or its
// 'drain'; a busy session's within ACK_DELAY_MS). Acknowledgement, credit and the resume buffer
// are one mechanism: what is unacknowledged is what a resume replays, bounded per session by
// WINDOW, and a sender at WINDOW stops reading its plain leg (backpressure to the reader). Credit
// keeps a stuck session from stalling the others; turns keep a busy one from delaying them: the
// sessions with bytes to send put one frame each on the link in turn, and only while the link
// queues little (LINK_QUEUE_BYTES, LINK_NOTSENT_LOWAT), so a credit as large as a TCP send buffer
// does not become a queue in front of every other session's frames (link.ts schedule).
//
// Security: the link is node:tls, TLS 1.3 only, authenticated by a pre-shared key derived from
// the pair secret (HKDF): no certificate at all, nothing to generate or pin, and a peer without
// the secret fails the handshake itself (its binder does not verify), with (EC)DHE for forward
// secrecy. Then each side sends a HELLO whose HMAC (a key derived from the secret) covers the TLS
// session's exported keying material and the sender's role: the proof is bound to this link and
// a reflected hello fails. No frame but HELLO is accepted before the peer's HELLO verified.
// After the hellos the frames leave TLS for records sealed under keys exported from it, when
// both ends can (records.ts; the switch: link.ts); else they stay in TLS. Resume tokens are 128 random bits, known only to the two ends, and accepted only on an
// authenticated link.
//
// Liveness: a HEARTBEAT frame is sent whenever the link has sent nothing for the pair heartbeat,
// so a box that counts only data sees traffic; a link with no frame from its peer for 3 x
// heartbeat is dead, whatever TCP says. The near end then reconnects with backoff, each time
// from a new socket (a new source port: a NAT makes a new mapping), and resumes every session at
// the last offset its peer acknowledged; past the resume window both ends reset their plain legs
// (reason pair_lost).
//
// Frames: [type u8][channel u32 BE][length u32 BE][payload]. A frame of an unknown type, longer
// than its type allows, or anything before the peer's HELLO ends the link (its sessions wait for
// a resume); nothing a peer sends can reach a session it has not authenticated for.

/** Frame types. */
export const FRAME = {
  /**
   * payload: version u8, role u8 (ROLE), flags u8 (HELLO_FLAGS), HMAC-SHA256 over the link's
   * keying material, role and flags. The near end sends it first; the far end answers once the
   * near end's verified.
   */
  HELLO: 0,
  /** payload: the session's next bytes in that direction. */
  DATA: 1,
  /**
   * payload: offset u48: every byte before it was taken by the plain leg (credit returns); the
   * FIN counts as one more offset, so the byte count + 1 acknowledges the FIN too.
   */
  ACK: 2,
  /** no payload: the link is alive (sent when it has been idle for the pair heartbeat). */
  HEARTBEAT: 3,
  /** payload: token (16 bytes): a new session, near to far. */
  OPEN: 4,
  /** payload: offset u48: the sender's direction ends (FIN) after that many bytes. */
  FIN: 5,
  /** no payload: the session is reset (an RST on the plain leg); or refused. */
  RST: 6,
  /** payload: token (16 bytes), offset u48 received so far: carry on a session on a new link. */
  RESUME: 7,
} as const
export type FrameType = (typeof FRAME)[keyof typeof FRAME]

export const HEADER_BYTES = 9
/** The largest DATA payload: big enough for bulk, small enough to interleave sessions. */
export const MAX_DATA = 64 * 1024
/**
 * Bytes a sender may have unacknowledged per session and direction (credit and resume buffer):
 * Linux's largest automatic TCP send buffer, so that one session can fill a long path as a plain
 * TCP connection would (bandwidth x round trip: 100 Mbit/s over 50 ms is 625 KB in flight).
 */
export const WINDOW = 4 * 1024 * 1024
/**
 * How long a receiver may hold an acknowledgement back (channel.ts acknowledge), so that a busy
 * interactive session sends one ACK for many reads rather than one a read, as TCP's delayed ACK
 * does (Linux waits up to 40 ms, QUIC's max_ack_delay is 25). A channel acknowledged less often
 * than this, or with a frame's worth (MAX_DATA) to acknowledge, still acknowledges at the end of
 * the turn; a quarter window goes at once, and a FIN too. What it delays: a sender's credit (a
 * few small reads of WINDOW) and a reset that waits for its bytes to be acknowledged first
 * (session.ts), by at most this.
 */
export const ACK_DELAY_MS = 10
/**
 * What a link queues ahead of a session's next frame: at most LINK_QUEUE_BYTES in its socket's
 * buffer (link.ts schedule: the sessions take turns for the rest), and LINK_NOTSENT_LOWAT not yet
 * sent in the kernel (TCP_NOTSENT_LOWAT). Measured (pinned, one 256 MiB stream through a pair):
 * a queue this deep costs less CPU per byte than the socket's 64 KiB high-water mark.
 */
export const LINK_QUEUE_BYTES = 256 * 1024
export const LINK_NOTSENT_LOWAT = 128 * 1024
export const TOKEN_BYTES = 16
/** 2: HELLO has flags, and the link may leave TLS for sealed records (records.ts). */
export const PROTOCOL_VERSION = 2

/** HELLO's flags. */
export const HELLO_FLAGS = {
  /**
   * Near end: it can carry the link's frames in sealed records (it has the native helper, which
   * takes the socket back from TLS); far end: they will, from the near end's first record on.
   */
  records: 1,
} as const

export const ROLE = { near: 1, far: 2 } as const
export type Role = keyof typeof ROLE

/** This version's HELLO payload: version, role, flags and the proof. */
export const HELLO_BYTES = 3 + 32

/**
 * The payload each type carries: DATA and HELLO up to this, every other type exactly this; else
 * a protocol error. HELLO: any version's, so that the link can name a peer's other version.
 */
export const MAX_PAYLOAD: Record<FrameType, number> = {
  [FRAME.HELLO]: 64,
  [FRAME.DATA]: MAX_DATA,
  [FRAME.ACK]: 6,
  [FRAME.HEARTBEAT]: 0,
  [FRAME.OPEN]: TOKEN_BYTES,
  [FRAME.FIN]: 6,
  [FRAME.RST]: 0,
  [FRAME.RESUME]: TOKEN_BYTES + 6,
}

/** A frame's header (and its small payload, if any) in one buffer; DATA's payload is written after it. */
export function frameHeader(type: FrameType, channel: number, length: number, extra = 0): Buffer {
  const b = Buffer.allocUnsafe(HEADER_BYTES + extra)
  b[0] = type
  b.writeUInt32BE(channel, 1)
  b.writeUInt32BE(length, 5)
  return b
}

/** A control frame whose payload is one u48 offset (ACK, FIN). */
export function offsetFrame(type: typeof FRAME.ACK | typeof FRAME.FIN, channel: number, offset: number): Buffer {
  const b = frameHeader(type, channel, 6, 6)
  b.writeUIntBE(offset, HEADER_BYTES, 6)
  return b
}

export function readOffset(payload: Buffer, at = 0): number {
  return payload.readUIntBE(at, 6)
}

/** What a FrameReader hands on: control frames whole, DATA payloads piece by piece as they arrive. */
export interface FrameSink {
  onControl(type: FrameType, channel: number, payload: Buffer): void
  /** A piece of a DATA frame's payload (a view of the bytes read: no copy). */
  onData(channel: number, piece: Buffer): void
  /** The peer broke the protocol; nothing more is read. */
  onProtocolError(detail: string): void
}

/**
 * Splits the link's byte stream into frames with no copy of DATA payloads (a 64 KiB frame spans
 * several TLS records: its pieces go on as they come). Only headers and control payloads, a few
 * bytes each, are gathered when split across reads.
 */
export class FrameReader {
  readonly #sink: FrameSink
  readonly #header = Buffer.allocUnsafe(HEADER_BYTES)
  #headerHave = 0
  /** The frame being read: its type, channel, and payload bytes still to come. */
  #type: FrameType = FRAME.HEARTBEAT
  #channel = 0
  #left = -1
  #control: Buffer | undefined
  #controlHave = 0
  #broken = false

  constructor(sink: FrameSink) {
    this.#sink = sink
  }

  push(chunk: Buffer): void {
    let at = 0
    while (at < chunk.length && !this.#broken) {
      if (this.#left < 0) {
        const take = Math.min(HEADER_BYTES - this.#headerHave, chunk.length - at)
        chunk.copy(this.#header, this.#headerHave, at, at + take)
        this.#headerHave += take
        at += take
        if (this.#headerHave < HEADER_BYTES) return
        this.#headerHave = 0
        if (!this.#startFrame()) return
        continue
      }
      const take = Math.min(this.#left, chunk.length - at)
      if (this.#type === FRAME.DATA) {
        this.#left -= take
        this.#sink.onData(this.#channel, chunk.subarray(at, at + take))
      } else {
        chunk.copy(this.#control!, this.#controlHave, at, at + take)
        this.#controlHave += take
        this.#left -= take
      }
      at += take
      if (this.#left === 0) this.#endFrame()
    }
  }

  /** A header is complete: checks it; false when the peer broke the protocol. */
  #startFrame(): boolean {
    const type = this.#header[0]! as FrameType
    const length = this.#header.readUInt32BE(5)
    const max = MAX_PAYLOAD[type]
    if (max === undefined) return this.#fail(`unknown frame type ${type}`)
    if (length > max || (type === FRAME.DATA && length === 0)) return this.#fail(`frame type ${type} of ${length} bytes`)
    this.#type = type
    this.#channel = this.#header.readUInt32BE(1)
    this.#left = length
    if (type !== FRAME.DATA) {
      this.#control = Buffer.allocUnsafe(length)
      this.#controlHave = 0
    }
    if (length === 0) this.#endFrame()
    return true
  }

  #endFrame(): void {
    this.#left = -1
    if (this.#type === FRAME.DATA) return
    const payload = this.#control!
    this.#control = undefined
    // Every control payload has one exact length (DATA aside, a short one is as wrong as a long
    // one); a HELLO's depends on its version, which the link checks first.
    if (payload.length !== MAX_PAYLOAD[this.#type] && this.#type !== FRAME.HELLO) {
      this.#fail(`frame type ${this.#type} of ${payload.length} bytes`)
      return
    }
    this.#sink.onControl(this.#type, this.#channel, payload)
  }

  /** Reads nothing more (the link left the stream this reader was reading). */
  stop(): void {
    this.#broken = true
  }

  #fail(detail: string): false {
    this.#broken = true
    this.#sink.onProtocolError(detail)
    return false
  }
}
