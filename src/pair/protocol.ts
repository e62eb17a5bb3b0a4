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
// - One TLS stream moves 600 MB/s with both of its ends in one process on one core: a link can
//   carry the 500 MB/s bulk target if framing costs little (data frames up to 64 KiB).
// The price of multiplexing is head-of-line blocking: a bulk session must not stall an
// interactive one. So the receiver never stops reading the link for one session's sake, and
// each session has credit: a sender has at most WINDOW bytes unacknowledged per direction, and
// the receiver acknowledges bytes once its plain leg's socket took them (write() without
// backpressure, or its 'drain'). Acknowledgement, credit and the resume buffer are one
// mechanism: what is unacknowledged is what a resume replays, bounded per session by WINDOW,
// and a sender at WINDOW stops reading its plain leg (backpressure to the reader).
//
// Security: the link is node:tls, TLS 1.3 only, authenticated by a pre-shared key derived from
// the pair secret (HKDF): no certificate at all, nothing to generate or pin, and a peer without
// the secret fails the handshake itself (its binder does not verify), with (EC)DHE for forward
// secrecy. Then each side sends a HELLO whose HMAC (a key derived from the secret) covers the TLS
// session's exported keying material and the sender's role: the proof is bound to this link and
// a reflected hello fails. No frame but HELLO is accepted before the peer's HELLO verified.
// Resume tokens are 128 random bits, known only to the two ends, and accepted only on an
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
  /** payload: version u8, role u8 (ROLE), HMAC-SHA256 over the link's keying material and role. */
  HELLO: 0,
  /** payload: the session's next bytes in that direction. */
  DATA: 1,
  /** payload: offset u48: every byte before it was taken by the plain leg (credit returns). */
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
/** Bytes a sender may have unacknowledged per session and direction (credit and resume buffer). */
export const WINDOW = 256 * 1024
export const TOKEN_BYTES = 16
export const PROTOCOL_VERSION = 1

export const ROLE = { near: 1, far: 2 } as const
export type Role = keyof typeof ROLE

/** The longest payload each type may carry; anything longer is a protocol error. */
export const MAX_PAYLOAD: Record<FrameType, number> = {
  [FRAME.HELLO]: 2 + 32,
  [FRAME.DATA]: MAX_DATA,
  [FRAME.ACK]: 6,
  [FRAME.HEARTBEAT]: 0,
  [FRAME.OPEN]: TOKEN_BYTES,
  [FRAME.FIN]: 6,
  [FRAME.RST]: 0,
  [FRAME.RESUME]: TOKEN_BYTES + 6,
}
