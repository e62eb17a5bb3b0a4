// What ka-proxy does to its sockets, in one place: the options it sets (and reads back), and
// the descriptor behind each kind of socket (fdOf). The list below is every socket option the
// proxy sets anywhere, C included; a new one goes here first.
//
// SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT
//   why    find a dead peer of an idle leg: probes after `idle`, every `interval`, `count` of
//          them; the user timeout bounds how long sent data may stay unacknowledged.
//   where  the listening socket, inherited by every client leg (applyToListener, from
//          listener.ts); each client leg where not inherited and each target leg once connected
//          (apply, from session.ts); live legs on reload (listener.ts retune); probe connections
//          (probe/runner.ts); doctor's loopback socket. In C: ka_sockopt.c setKeepalive, and
//          the target legs the pump opens, once connected (ka_pump.c on_event, from the options
//          the session gave Relay.connect: CONNECT_KEEPALIVE).
// TCP_NODELAY
//   why    small writes (a query, a handshake, a heartbeat) go out at once, not held back by
//          Nagle's algorithm waiting for an ACK.
//   where  noDelay() below, the one place JavaScript sets it: the listening socket, inherited by
//          every client leg (listener.ts); stream target legs (transport/stream.ts); heartbeat
//          and probe connections (heartbeat/checker.ts, probe/check.ts, probe/server.ts).
//          In C: the target legs the pump opens itself (ka_pump.c ka_pump_connect).
// SO_OOBINLINE
//   why    urgent data (telnet's and FTP's abort) is relayed as a byte in its place in the
//          stream instead of being pulled out of it and lost (RFC 6093).
//   where  urgentInline(): the listening socket, inherited by every client leg
//          (applyToListener); stream target legs (transport/stream.ts). In C: the pump's target
//          legs, client legs Node accepted and the paired sessions' plain legs it reads
//          (pair/pump-reader.ts; ka_pump.c register_leg); a client the pump accepted
//          (ka_accept.c) has it from the listening socket. Needs the native helper.
// TCP_NOTSENT_LOWAT
//   why    a pair link's kernel send queue holds at most LINK_NOTSENT_LOWAT bytes not yet sent,
//          so what waits beyond is in the link's own queue, where its sessions take turns: a
//          bulk session's bytes do not pile up in the kernel ahead of an interactive one's.
//   where  notSentLowat(): every pair link's socket, both ends (pair/transport.ts, the link's
//          tune). Needs the native helper.
// SO_LINGER, on with timeout 0
//   why    the close sends an RST, not a FIN: the peer learns at once that the session failed
//          (a kill, on-down, a failed leg, a refused client, a probe connection found dead).
//   where  in C: ka_pump.c close_leg (reset), ka_accept.c close_reset (a refused client the pump
//          accepted: accept.ts resetAccepted). Through Node's resetAndDestroy() (libuv sets it):
//          transport/stream.ts, accept.ts resetAccepted, probe/check.ts, probe/pg.ts.
//
// Set by Node and libuv, not by ka-proxy: SO_REUSEADDR on the listening socket (at bind),
// O_NONBLOCK and close-on-exec on every socket. Connections made through a library (undici for
// HTTP heartbeats, pg for probe-pg) get what that library sets.
//
// Read, never set: SO_KEEPALIVE and TCP_KEEP* back with getsockopt (read, check: reload and
// doctor confirm what was set), TCP_NODELAY, SO_OOBINLINE and TCP_NOTSENT_LOWAT back (flags), TCP_INFO (tcpInfo,
// deadReason: the kernel's verdict on a leg), SIOCOUTQ (sendQueueBytes: bytes not yet
// acknowledged), getsockname/getpeername (addresses of the pump's legs), SO_ERROR (in the pump:
// a connect's result, a failed leg's errno), SO_ACCEPTCONN (ka_accept.c: the descriptor given to
// an Acceptor listens).
//
// Keepalive without the native addon: Node's setKeepAlive, which on Linux sets TCP_KEEPIDLE but
// forces TCP_KEEPINTVL = 1 and TCP_KEEPCNT = 10 and cannot set TCP_USER_TIMEOUT. Any
// setKeepAlive call made after the native options resets interval and count, so nothing here
// calls it on the native path. SO_OOBINLINE needs the addon too; TCP_NODELAY does not.

import net, { type Server, type Socket } from 'node:net'
import { formatEndpoint } from './config/endpoint.ts'
import { SocketOptionError } from './errors.ts'
import { handleFd, listenHandleNoDelay } from './node-internals.ts'
import { loadNative, type NativeAddon, type NativeTcpInfo, type SocketFlags } from './native.ts'
import { userTimeoutMs, type KeepaliveSettings } from './keepalive/settings.ts'

/** Settings in force on a socket, and whether the native helper set them. */
export interface AppliedKeepalive extends KeepaliveSettings {
  native: boolean
}

/** What getsockopt reads back; `userTimeout` in seconds. */
export interface KeepaliveReadback extends KeepaliveSettings {
  enabled: boolean
}

export type TcpInfo = NativeTcpInfo

const TCP_CLOSE = 7
const FALLBACK_INTERVAL = 1
const FALLBACK_COUNT = 10

/** A socket, a listening socket, or a descriptor the native pump owns. */
export type SocketRef = Socket | Server | number

/**
 * The file descriptor behind a Node socket or server, an accepted client not wrapped in a socket
 * (a handle of Node's, or one the pump accepted: src/accept.ts), or a descriptor itself. Node's
 * own are read through src/node-internals.ts.
 */
export function fdOf(socket: SocketRef | { readonly fd: number }): number {
  if (typeof socket === 'number') return socket
  if (!(socket instanceof net.Socket) && !(socket instanceof net.Server)) return socket.fd
  const fd = handleFd(socket)
  if (fd === undefined) {
    throw new SocketOptionError('fd', 'EBADF', 'socket has no file descriptor (closed, or not yet connected)')
  }
  return fd
}

/**
 * TCP_NODELAY, the one place JavaScript sets it. On a listening socket it is inherited by every
 * socket accepted from it (Linux, and the BSDs), so no call per client; false when Node's
 * listening handle cannot take it (src/node-internals.ts), and then each accepted socket needs
 * its own call. On a socket that is still connecting, Node sets it once the descriptor exists.
 * The pump sets it on the target legs it opens itself (native/ka_pump.c ka_pump_connect).
 */
export function noDelay(socket: Socket | Server): boolean {
  if (socket instanceof net.Server) return listenHandleNoDelay(socket)
  socket.setNoDelay(true)
  return true
}

function wrapNativeError(err: unknown): SocketOptionError {
  const e = err as Error & { code?: string; option?: string }
  return new SocketOptionError(e.option ?? 'unknown', e.code ?? 'EUNKNOWN', e.message, err)
}

function callNative<T>(fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    throw wrapNativeError(err)
  }
}

/**
 * The options of the list above that need the native helper (keepalive beyond
 * idle, SO_OOBINLINE) and what is read back from sockets, with Node's setKeepAlive as the
 * fallback. The running proxy has one (cli.ts), shared by every route's listener.
 */
export class SocketControl {
  readonly native: boolean
  /** Why the native helper is not in use, when it is not. */
  readonly fallbackReason: string | undefined
  readonly #binding: NativeAddon | undefined

  constructor(options: { native?: boolean } = {}) {
    const load = options.native === false ? { ok: false as const, reason: 'disabled by --no-native' } : loadNative()
    this.native = load.ok
    this.#binding = load.ok ? load.binding : undefined
    this.fallbackReason = load.ok ? undefined : load.reason
  }

  /** What `apply` will really put in force: the fallback cannot honour interval, count or user timeout. */
  effective(s: KeepaliveSettings): AppliedKeepalive {
    if (this.native) return { ...s, native: true }
    return { idle: s.idle, interval: FALLBACK_INTERVAL, count: FALLBACK_COUNT, userTimeout: 0, native: false }
  }

  /** Sets the options on a connected socket; returns what is in force (see `effective`). */
  apply(socket: Socket | number, s: KeepaliveSettings): AppliedKeepalive {
    this.set(socket, s)
    return this.effective(s)
  }

  /** `apply` for the per-session path: sets, and builds nothing to say so. */
  set(socket: Socket | number, s: KeepaliveSettings): void {
    if (!this.#binding) {
      if (typeof socket === 'number') throw new SocketOptionError('native', 'ENOTSUP', 'a bare descriptor needs the native helper')
      socket.setKeepAlive(true, s.idle * 1000)
      return
    }
    setOnFd(this.#binding, fdOf(socket), s)
  }

  /**
   * Sets the options on a listening socket so that every accepted socket inherits them
   * (Linux copies SO_KEEPALIVE, TCP_KEEP* and TCP_USER_TIMEOUT to the child): no system
   * call per accepted connection. Returns false when the caller must `apply` per socket.
   */
  applyToListener(server: Server | number, s: KeepaliveSettings): boolean {
    if (!this.#binding) return false
    setOnFd(this.#binding, fdOf(server), s)
    this.urgentInline(server)
    return true
  }

  /** SO_OOBINLINE on a socket (or a listening socket, for those it accepts); false without the native helper. */
  urgentInline(socket: SocketRef): boolean {
    return this.#setNative(socket, (binding, fd) => binding.setUrgentInline(fd))
  }

  /** TCP_NOTSENT_LOWAT on a socket; false without the native helper. */
  notSentLowat(socket: SocketRef, bytes: number): boolean {
    return this.#setNative(socket, (binding, fd) => binding.setNotSentLowat(fd, bytes))
  }

  /** An option only the native helper sets: false without it (nothing set), else set or thrown. */
  #setNative(socket: SocketRef, set: (binding: NativeAddon, fd: number) => void): boolean {
    const binding = this.#binding
    if (!binding) return false
    const fd = fdOf(socket)
    callNative(() => set(binding, fd))
    return true
  }

  read(socket: SocketRef): KeepaliveReadback {
    const binding = this.#requireBinding('read keepalive options')
    const fd = fdOf(socket)
    const raw = callNative(() => binding.getKeepalive(fd))
    return {
      enabled: raw.enabled,
      idle: raw.idle,
      interval: raw.interval,
      count: raw.count,
      userTimeout: raw.userTimeoutMs / 1000,
    }
  }

  /** TCP_NODELAY, SO_OOBINLINE and TCP_NOTSENT_LOWAT as the kernel has them on this socket. */
  flags(socket: SocketRef): SocketFlags {
    const binding = this.#requireBinding('read socket flags')
    const fd = fdOf(socket)
    return callNative(() => binding.getSocketFlags(fd))
  }

  /**
   * Reads the keepalive options back and compares them with what `apply` puts in force for
   * `wanted`: the one check behind a reload's read-back and `doctor`. `differs` names each
   * option the kernel does not have as wanted (empty: all as set). Needs the native helper.
   */
  check(socket: SocketRef, wanted: KeepaliveSettings): { back: KeepaliveReadback; differs: string[] } {
    const back = this.read(socket)
    const w = this.effective(wanted)
    const differs: string[] = []
    if (!back.enabled) differs.push('SO_KEEPALIVE')
    if (back.idle !== w.idle) differs.push('TCP_KEEPIDLE')
    if (back.interval !== w.interval) differs.push('TCP_KEEPINTVL')
    if (back.count !== w.count) differs.push('TCP_KEEPCNT')
    if (back.userTimeout !== w.userTimeout) differs.push('TCP_USER_TIMEOUT')
    return { back, differs }
  }

  tcpInfo(socket: SocketRef): TcpInfo {
    const binding = this.#requireBinding('read TCP_INFO')
    const fd = fdOf(socket)
    return callNative(() => binding.tcpInfo(fd))
  }

  /** Both ends of a connected socket, as host:port. */
  addresses(socket: Socket | number): { local: string; remote: string } {
    if (typeof socket !== 'number') {
      return { local: formatEndpoint(socket.localAddress, socket.localPort), remote: formatEndpoint(socket.remoteAddress, socket.remotePort) }
    }
    const binding = this.#requireBinding('read socket addresses')
    const [lh, lp, rh, rp] = callNative(() => binding.socketAddresses(socket))
    return { local: formatEndpoint(lh, lp), remote: formatEndpoint(rh, rp) }
  }

  /** Bytes sent but not yet acknowledged; undefined when it cannot be known. */
  sendQueueBytes(socket: SocketRef): number | undefined {
    if (!this.#binding) return undefined
    const binding = this.#binding
    try {
      return binding.sendQueueBytes(fdOf(socket))
    } catch {
      return undefined
    }
  }

  /**
   * Whether the kernel has given up on this connection (TCP state CLOSE) although Node has
   * not reported it: a reset or timeout on a socket that is not being read surfaces late,
   * or as a plain EOF. 'timeout' when probes or retransmissions went unanswered (keepalive
   * or TCP_USER_TIMEOUT), else 'reset'. undefined while alive, or when it cannot be known.
   */
  deadReason(socket: SocketRef): 'reset' | 'timeout' | undefined {
    if (!this.#binding) return undefined
    let info: NativeTcpInfo
    try {
      info = this.#binding.tcpInfo(fdOf(socket))
    } catch {
      return undefined
    }
    if (info.state !== TCP_CLOSE) return undefined
    return info.probes > 0 || info.retransmits > 0 || info.backoff > 0 ? 'timeout' : 'reset'
  }

  #requireBinding(what: string): NativeAddon {
    if (!this.#binding) {
      throw new SocketOptionError('native', 'ENOTSUP', `cannot ${what}: native helper not in use (${this.fallbackReason})`)
    }
    return this.#binding
  }
}

/** Called once per session (a target leg the pump does not set itself): no closure, unlike `callNative`. */
function setOnFd(binding: NativeAddon, fd: number, s: KeepaliveSettings): void {
  try {
    binding.setKeepalive(fd, 1, s.idle, s.interval, s.count, userTimeoutMs(s))
  } catch (err) {
    throw wrapNativeError(err)
  }
}
