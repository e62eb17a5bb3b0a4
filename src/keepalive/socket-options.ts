// Every socket option ka-proxy sets, and the only place that touches a socket's fd.
//
// With the native addon: SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT and
// TCP_USER_TIMEOUT, read back with getsockopt. Without it: Node's setKeepAlive, which on
// Linux sets TCP_KEEPIDLE but forces TCP_KEEPINTVL = 1 and TCP_KEEPCNT = 10 and cannot
// set TCP_USER_TIMEOUT. Any setKeepAlive call made after the native options resets
// interval and count, so nothing here calls it on the native path.
//
// SO_OOBINLINE (native addon only): urgent data (telnet's and FTP's abort) is relayed as a byte
// in its place instead of being pulled out of the stream and lost. Set on the listening socket
// (inherited) and on stream target legs here; the pump sets it on its own legs (ka_pump.c).

import type { Server, Socket } from 'node:net'
import { formatEndpoint } from '../config/endpoint.ts'
import { SocketOptionError } from '../errors.ts'
import { handleFd } from '../node-internals.ts'
import { loadNative, type NativeAddon, type NativeTcpInfo } from '../native.ts'
import type { KeepaliveSettings } from './settings.ts'

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

/** The file descriptor behind a Node socket or server (through src/node-internals.ts). */
export function fdOf(socket: SocketRef): number {
  if (typeof socket === 'number') return socket
  const fd = handleFd(socket)
  if (fd === undefined) {
    throw new SocketOptionError('fd', 'EBADF', 'socket has no file descriptor (closed, or not yet connected)')
  }
  return fd
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

export class KeepaliveApplier {
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

  /** Sets the options on a connected socket. */
  apply(socket: Socket | number, s: KeepaliveSettings): AppliedKeepalive {
    if (!this.#binding) {
      if (typeof socket === 'number') throw new SocketOptionError('native', 'ENOTSUP', 'a bare descriptor needs the native helper')
      socket.setKeepAlive(true, s.idle * 1000)
      return this.effective(s)
    }
    setOnFd(this.#binding, fdOf(socket), s)
    return this.effective(s)
  }

  /**
   * Sets the options on a listening socket so that every accepted socket inherits them
   * (Linux copies SO_KEEPALIVE, TCP_KEEP* and TCP_USER_TIMEOUT to the child): no system
   * call per accepted connection. Returns false when the caller must `apply` per socket.
   */
  applyToListener(server: Server, s: KeepaliveSettings): boolean {
    if (!this.#binding) return false
    setOnFd(this.#binding, fdOf(server), s)
    this.urgentInline(server)
    return true
  }

  /** SO_OOBINLINE on a socket (or a listening socket, for those it accepts); false without the native helper. */
  urgentInline(socket: SocketRef): boolean {
    if (!this.#binding) return false
    const binding = this.#binding
    const fd = fdOf(socket)
    callNative(() => binding.setUrgentInline(fd))
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

function setOnFd(binding: NativeAddon, fd: number, s: KeepaliveSettings): void {
  const userTimeoutMs = Math.round(s.userTimeout * 1000)
  callNative(() => binding.setKeepalive(fd, 1, s.idle, s.interval, s.count, userTimeoutMs))
}
