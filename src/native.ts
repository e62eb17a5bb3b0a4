// The native helper (native/, one N-API addon: ka_native.node): the one place that loads it,
// and the one declaration of what it exports. It holds: socket options Node cannot set and
// their read-back (native/ka_sockopt.c, used through src/socket-control.ts), the byte pump
// (native/ka_pump.c, ka_relay.c and ka_accept.c, used by src/transport/native.ts), sd_notify's sendto
// (native/ka_notify.c, used by src/notify.ts) and descriptor passing (native/ka_fdpass.c, for
// the upgrade hand-over).
//
// The binary is a local build (native/build, in a checkout) or the prebuilt one the package
// ships (native/prebuilds), found by node-gyp-build. Loading may fail (no binary for this
// platform, another OS); the caller then falls back and says why, once.

import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { missingNodeInternals } from './node-internals.ts'

/** Options read back from the kernel besides keepalive (getSocketFlags). */
export interface SocketFlags {
  noDelay: boolean
  urgentInline: boolean
  notSentLowat: number
}

export interface NativeKeepalive {
  enabled: boolean
  idle: number
  interval: number
  count: number
  userTimeoutMs: number
}

export interface NativeTcpInfo {
  state: number
  retransmits: number
  probes: number
  backoff: number
  rtoUs: number
  unacked: number
  lastDataSentMs: number
  lastDataRecvMs: number
  lastAckRecvMs: number
  rttUs: number
  rttvarUs: number
  sndCwnd: number
  totalRetrans: number
}

/** The byte pump of one session (native/ka_relay.c, over native/ka_pump.c); legs are 0 (client) and 1 (target). */
export interface NativeRelay {
  /**
   * null, or the errno name when the connect failed at once. `flags` (CONNECT_*): what the pump
   * does itself once the leg connects, before CONNECT: set these keepalive options (a failure's
   * errno comes with CONNECT), start relaying.
   */
  connect(address: string, port: number, family: number, flags?: number, idleS?: number, intervalS?: number, count?: number, userTimeoutMs?: number): string | null
  start(): void
  /** A reader (RELAY_READER) stops reading until start(). */
  pause(): void
  /** True when the leg closed at once. */
  end(leg: 0 | 1): boolean
  reset(leg: 0 | 1): void
  destroy(leg: 0 | 1): void
  /** [bytes queued for the leg, FIN asked for, FIN sent] */
  state(leg: 0 | 1): [number, boolean, boolean]
  bytes(leg: 0 | 1): number
  /** The leg's descriptor, -1 once closed. */
  fd(leg: 0 | 1): number
  /**
   * Takes the relay out of the pump for an upgrade, without closing a leg: null when it cannot go
   * (not relaying, a leg connecting, closed, failed or being drained). The descriptors are then
   * the caller's; the relay reports nothing more.
   */
  detach(): DetachedRelay | null
  /**
   * Before start(): the target leg is a connected socket handed over (a duplicate is taken; by a
   * relay made with RELAY_OWN_FD, the descriptor itself, and both are the caller's again if this
   * throws), and each leg gets the bytes held for it and its half-close state (ADOPT_* flags).
   */
  adopt(targetFd: number, queued: [Buffer, Buffer], flags: [number, number], bytes: [number, number]): void
}

/**
 * A relay taken out of the pump, flat (one array, no Buffer for an empty queue: every session of
 * an upgrade is detached): descriptors, half-close state (ADOPT_* flags) and bytes read from each
 * leg, then the bytes held for each (read from the other, not yet written to it), null for none.
 */
export type DetachedRelay = [
  clientFd: number, targetFd: number,
  clientFlags: number, targetFlags: number,
  bytesFromClient: number, bytesFromTarget: number,
  heldForClient: Buffer | null, heldForTarget: Buffer | null,
]

export const ADOPT_END_REQUESTED = 1
export const ADOPT_FIN_SENT = 2
export const ADOPT_END_RECEIVED = 4

/**
 * Relay flag: the client descriptor is taken as it is, no duplicate: accepted by an Acceptor, or
 * received by an upgrade (adopt() then takes the target's as it is too).
 */
export const RELAY_OWN_FD = 1
/** Relay flag: a reader (native/ka_relay.c), whose reads go to JavaScript (src/pair/pump-reader.ts). */
export const RELAY_READER = 2
/** What a relay's callback is told (native/ka_pump.h): its first argument. */
export const EV_CONNECT = 1
export const EV_EOF = 2
export const EV_ERROR = 3
export const EV_CLOSE = 4
/** A reader's read: the third argument is its length. */
export const EV_DATA = 5
/** Relay.connect's flags: set the keepalive options given once connected; start relaying then. */
export const CONNECT_KEEPALIVE = 1
export const CONNECT_START = 2

/**
 * `flags` RELAY_OWN_FD, or RELAY_READER with `into`: a reader of a duplicate of `clientFd` (see
 * native/ka_relay.c), each read into `into` and told as (5, 0, bytes read).
 */
export type NativeRelayClass = new (
  clientFd: number,
  owner: object,
  callback: (this: never, kind: number, leg: 0 | 1, errno: number) => void,
  flags?: number,
  into?: Buffer,
) => NativeRelay

/** A listening socket watched in the pump's epoll set (native/ka_accept.c). */
export interface NativeAcceptor {
  /** Stops accepting and closes the acceptor's copy of the listening descriptor. */
  close(): void
  /** Watches again after an error (or pause) stopped it. */
  resume(): void
  /** Stops watching until resume(), the descriptor kept (--workers: another loop accepts). */
  pause(): void
  /** Accepts at most `n` (1..64) per readiness event (64 by default). */
  batch(n: number): void
  /** The acceptor's listening descriptor; -1 once closed. */
  fd(): number
}

/**
 * `new Acceptor(listenFd, owner, callback)`: takes a duplicate of the listening descriptor and calls
 * callback.call(owner, [fd, host, port, ...], errno) once per batch of accepted clients; an errno
 * other than 0 stopped accepting until resume().
 */
export type NativeAcceptorClass = new (
  listenFd: number,
  owner: object,
  callback: (this: never, accepted: Array<number | string>, errno: number) => void,
) => NativeAcceptor

/** One direction's AES-256-GCM key (native/ka_aead.c), for the pair link's records (src/pair/records.ts). */
export interface NativeAead {
  /** Writes the whole record into `out` at `offset`: [length u32 BE][ciphertext][tag], the length authenticated; returns its size. */
  seal(nonce: Buffer, pieces: readonly Buffer[], out: Buffer, offset: number): number
  /** Opening a record in steps: its header (the length) first. */
  begin(nonce: Buffer, header: Buffer): void
  /** Deciphers the next piece of its ciphertext into `out` at `offset`. */
  update(piece: Buffer, out: Buffer, offset: number): void
  /** Whether the tag verifies (false: nothing update wrote is to be used). */
  final(tag: Buffer): boolean
}

/** What the addon exports; for setKeepalive a negative number leaves that option as it is. */
export interface NativeAddon {
  setKeepalive(fd: number, enable: number, idle: number, interval: number, count: number, userTimeoutMs: number): void
  getKeepalive(fd: number): NativeKeepalive
  tcpInfo(fd: number): NativeTcpInfo
  sendQueueBytes(fd: number): number
  /** SO_OOBINLINE: urgent data stays in the stream. */
  setUrgentInline(fd: number): void
  /** TCP_NOTSENT_LOWAT: the kernel takes at most this many bytes not yet sent. */
  setNotSentLowat(fd: number, bytes: number): void
  /** TCP_NODELAY and SO_OOBINLINE as the kernel has them; TCP_NOTSENT_LOWAT in bytes (-1: none on this platform). */
  getSocketFlags(fd: number): SocketFlags
  /** [localHost, localPort, remoteHost, remotePort] */
  socketAddresses(fd: number): [string, number, string, number]
  Relay: NativeRelayClass
  Acceptor: NativeAcceptorClass
  /** Closes an accepted client's descriptor with an RST. */
  closeReset(fd: number): void
  /** sd_notify: one datagram to a Unix socket path ('@' for an abstract name); see src/notify.ts. */
  notify(socket: string, message: string): void
  /** A connected AF_UNIX SOCK_SEQPACKET pair (close-on-exec); see native/ka_fdpass.c. */
  seqpacketPair(): [number, number]
  /** One message: the payload (1 byte to 1 MiB) and up to 253 descriptors (SCM_RIGHTS). */
  sendFds(sock: number, payload: Buffer, fds: number[], timeoutMs: number): void
  /** The next message, or null once the peer closed; throws ETIMEDOUT after timeoutMs. */
  recvFds(sock: number, maxBytes: number, timeoutMs: number): { payload: Buffer; fds: number[] } | null
  closeFd(fd: number): void
  /** dup2(from, to), then close(from). */
  moveFd(from: number, to: number): void
  /** A close-on-exec duplicate of `fd` (fcntl F_DUPFD_CLOEXEC). */
  dupFd(fd: number): number
  /**
   * One send(2) of `buffer` on a socket (MSG_NOSIGNAL, MSG_DONTWAIT): the bytes the kernel took,
   * 0 when none (EAGAIN), -errno on any other failure (not thrown). See native/ka_send.c.
   */
  sendSome(fd: number, buffer: Buffer): number
  /** `new Aead(key, seal)`: a 32-byte key that seals (true) or opens (false). */
  Aead: new (key: Buffer, seal: boolean) => NativeAead
}

export type NativeLoad = { ok: true; binding: NativeAddon } | { ok: false; reason: string }

const NATIVE_DIR = fileURLToPath(new URL('../native/', import.meta.url))

type NodeGypBuild = ((dir: string) => unknown) & { path(dir: string): string }

function nodeGypBuild(): NodeGypBuild {
  return createRequire(import.meta.url)('node-gyp-build') as NodeGypBuild
}

/** How to build the helper here: a git checkout has the build script, an installed package rebuilds through npm. */
export function buildAdvice(): string {
  return existsSync(new URL('../.git', import.meta.url))
    ? 'npm run build:native'
    : 'npm rebuild ka-proxy, with -g for a global install; it needs make, a C compiler and python3'
}

let cached: NativeLoad | undefined

/** KA_PROXY_NATIVE=0 turns the addon off, to run (and test) the fallback on purpose. */
export function loadNative(): NativeLoad {
  if (cached) return cached
  if (process.env.KA_PROXY_NATIVE === '0') {
    cached = { ok: false, reason: 'disabled by KA_PROXY_NATIVE=0' }
  } else if (missingNodeInternals().length > 0) {
    cached = { ok: false, reason: `Node ${process.version} changed internals the helper needs: ${missingNodeInternals().join(', ')}` }
  } else if (process.platform !== 'linux') {
    cached = { ok: false, reason: `built only on Linux (its pump uses epoll), not on ${process.platform}` }
  } else {
    try {
      cached = { ok: true, binding: nodeGypBuild()(NATIVE_DIR) as NativeAddon }
    } catch (err) {
      const message = (err as Error).message
      const reason = message.startsWith('No native build') ? `no binary for ${process.platform}-${process.arch}: build it with ${buildAdvice()}` : (message.split('\n')[0] ?? message)
      cached = { ok: false, reason }
    }
  }
  return cached
}

/** The file loadNative() loads (for tests that load it again in a child process or worker); throws when there is none. */
export function nativeBinaryPath(): string {
  return nodeGypBuild().path(NATIVE_DIR)
}
