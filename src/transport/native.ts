// The transport over the native pump (native/ka_pump.c): bytes move between the two
// descriptors inside the event loop with no JavaScript per chunk; this file turns the pump's
// few events (connected, end of stream, error, closed) into the session's and carries out its
// orders. The policy of how a session ends is in session.ts.
//
// Clients are accepted by the pump itself (acceptOn: native/ka_accept.c), and a relay takes the
// accepted descriptor as it is. A client Node accepted (a listener given a socket some other
// way) is handed over at once: the pump takes a duplicate of its descriptor and Node's copy is
// closed (no FIN). The target leg is opened by the pump itself, so a session costs no Node
// socket.

import dns from 'node:dns'
import net from 'node:net'
import { formatEndpoint, formatPeer } from '../config/endpoint.ts'
import { errnoName } from '../errors.ts'
import { closeAccepted, isPumpAccepted, readPeer, type Accepted, type PumpAccepted } from '../accept.ts'
import { fdOf } from '../socket-control.ts'
import { ADOPT_END_RECEIVED, ADOPT_END_REQUESTED, ADOPT_FIN_SENT, CONNECT_KEEPALIVE, CONNECT_START, EV_CLOSE, EV_CONNECT, EV_EOF, EV_ERROR, loadNative, RELAY_OWN_FD, type NativeRelay, type NativeRelayClass } from '../native.ts'
import { userTimeoutMs, type KeepaliveSettings } from '../keepalive/settings.ts'
import {
  NOTHING_HELD,
  socketDeadReason,
  socketUnacknowledged,
  type DetachedTransport,
  type Leg,
  type LegState,
  type TargetEndpoint,
  type Transport,
  type TransportDeps,
  type TransportEvents,
  type TransportAcceptor,
  type TransportState,
  type Transports,
} from './transport.ts'

const LEG_INDEX: Record<Leg, 0 | 1> = { client: 0, target: 1 }
const INDEX_LEG: readonly Leg[] = ['client', 'target']
/** A target given by address: nothing left to try after it (shared, never written). */
const NO_ADDRESSES: readonly dns.LookupAddress[] = Object.freeze([])

/**
 * Whether each target host is an IPv4 or IPv6 address, or a name (0): worked out once per host,
 * not at every connect (net.isIP runs a regular expression). A route has a few targets; the cap
 * only guards against hosts that change without end.
 */
const hostFamilies = new Map<string, number>()
const HOST_FAMILIES_KEPT = 1024

function ipFamily(host: string): number {
  let family = hostFamilies.get(host)
  if (family === undefined) {
    family = net.isIP(host)
    if (hostFamilies.size < HOST_FAMILIES_KEPT) hostFamilies.set(host, family)
  }
  return family
}

/** The pump's class, or why it cannot be used. */
export function nativeRelayClass(): NativeRelayClass | undefined {
  const load = loadNative()
  return load.ok && typeof load.binding.Relay === 'function' ? load.binding.Relay : undefined
}

/** Sessions of a listener over the native pump. */
export class NativeTransports implements Transports {
  readonly kind = 'native'
  readonly takesHandles = true
  readonly #Relay: NativeRelayClass
  readonly #deps: TransportDeps

  constructor(deps: TransportDeps) {
    const Relay = nativeRelayClass()
    if (Relay === undefined) throw new Error('the native pump is not available (native helper not in use)')
    this.#Relay = Relay
    this.#deps = deps
  }

  accept(client: Accepted, events: TransportEvents): Transport {
    return new NativeTransport(this.#Relay, client, events, this.#deps)
  }

  adopt(fds: readonly number[], state: TransportState, events: TransportEvents, own = false): Transport {
    // A paired session (one descriptor and a channel) is its route's pair transport's to adopt.
    if (fds.length !== 2 || state.pair !== undefined) throw new Error('not a session of two sockets')
    return new NativeTransport(this.#Relay, { fds: [fds[0]!, fds[1]!], state, own }, events, this.#deps)
  }

  acceptOn(listenFd: number, take: (client: Accepted) => void, onError: (code: string) => void): TransportAcceptor {
    const load = loadNative()
    if (!load.ok) throw new Error('the native pump is not available (native helper not in use)')
    const acceptor = new load.binding.Acceptor(listenFd, { take, onError }, acceptorOnBatch)
    return {
      get fd() {
        const fd = acceptor.fd()
        return fd >= 0 ? fd : undefined
      },
      resume: () => acceptor.resume(),
      pause: () => acceptor.pause(),
      batch: (n) => acceptor.batch(n),
      close: () => acceptor.close(),
    }
  }

  /**
   * Nothing to do: the pump stops reading a leg without taking it out of its epoll set, so the
   * kernel's EPOLLERR reports a paused leg's death at once (native/ka_pump.c).
   */
  checkPaused(): void {}
}

export class NativeTransport implements Transport {
  readonly #relay: NativeRelay
  readonly #events: TransportEvents
  readonly #deps: TransportDeps
  /**
   * The client's address and port as read at accept, and the target address being connected:
   * formatted only when shown (an idle session holds no strings built for its log line).
   */
  readonly #clientHost: string | undefined
  readonly #clientPort: number | undefined
  /** Adopted from an upgrade: the addresses as the old process showed them. */
  readonly #clientShown: string | undefined
  #targetShown: string | undefined
  #targetHost: string | undefined
  #port = 0
  #open: [boolean, boolean] = [true, false]
  #connecting = false
  /** The target leg's keepalive, set by the pump as it connects; it starts relaying then too. */
  #keepalive: KeepaliveSettings | undefined
  /** Addresses of the target's name not tried yet. */
  #untried: readonly dns.LookupAddress[] = NO_ADDRESSES

  /**
   * Takes over the accepted client. Throws (EMFILE...) when the pump cannot take its
   * descriptor; the client is then still the caller's.
   */
  constructor(Relay: NativeRelayClass, client: Accepted | { fds: [number, number]; state: TransportState; own: boolean }, events: TransportEvents, deps: TransportDeps) {
    this.#events = events
    this.#deps = deps
    if ('state' in client) {
      // Handed over by an upgrade: both legs connected; relay() writes what was held, then relays.
      // Descriptors of its own are taken as they are: no duplicate to make, none to close after
      // (on a throw they are the caller's again, untouched).
      const { fds, state, own } = client
      this.#relay = new Relay(fds[0], this, relayOnEvent, own ? RELAY_OWN_FD : 0)
      try {
        this.#relay.adopt(fds[1], [state.legs.client.queued, state.legs.target.queued], [adoptFlags(state.legs.client), adoptFlags(state.legs.target)], [state.bytesToTarget, state.bytesToClient])
      } catch (err) {
        this.#relay.destroy(0)
        throw err
      }
      this.#open = [true, true]
      this.#clientShown = state.clientAddress
      this.#targetShown = state.targetAddress
      return
    }
    this.#relay = new Relay(fdOf(client), this, relayOnEvent, isPumpAccepted(client) ? RELAY_OWN_FD : 0)
    // Read once, while Node's copy is open: the summary names the client after both legs closed.
    const peer = readPeer(client)
    this.#clientHost = peer.address
    this.#clientPort = peer.port
    closeAccepted(client)
  }

  get clientAddress(): string {
    return this.#clientShown ?? formatPeer(this.#clientHost, this.#clientPort)
  }

  get targetAddress(): string | undefined {
    return this.#targetHost === undefined ? this.#targetShown : formatEndpoint(this.#targetHost, this.#port)
  }

  get bytesToTarget(): number {
    return this.#relay.bytes(0)
  }

  get bytesToClient(): number {
    return this.#relay.bytes(1)
  }

  handle(leg: Leg): number | undefined {
    const i = LEG_INDEX[leg]
    if (!this.#open[i] || (i === 1 && this.#connecting)) return undefined
    const fd = this.#relay.fd(i)
    return fd >= 0 ? fd : undefined
  }

  isOpen(leg: Leg): boolean {
    return this.#open[LEG_INDEX[leg]]
  }

  isConnecting(leg: Leg): boolean {
    return leg === 'target' && this.#connecting
  }

  queuedBytes(leg: Leg): number {
    return this.#relay.state(LEG_INDEX[leg])[0]
  }

  unacknowledged(leg: Leg): number | undefined {
    const [queued, , finSent] = this.#relay.state(LEG_INDEX[leg])
    return socketUnacknowledged(this.#deps.sockets, this.handle(leg), queued, finSent)
  }

  deadReason(leg: Leg): 'reset' | 'timeout' | undefined {
    return socketDeadReason(this.#deps.sockets, this.handle(leg), this.#relay.state(LEG_INDEX[leg])[1])
  }

  /** The pump sets the keepalive given to `connect` itself (no call back into it at CONNECT). */
  get setsTargetKeepalive(): boolean {
    return true
  }

  connect(target: TargetEndpoint, keepalive: KeepaliveSettings): void {
    this.#open[1] = true
    this.#connecting = true
    this.#keepalive = keepalive
    const { host, port } = target
    this.#port = port
    this.#targetHost = undefined
    const family = ipFamily(host)
    if (family !== 0) {
      this.#connectTo({ address: host, family })
      return
    }
    // Every address the name has, tried in turn like net.connect does: "localhost" may give ::1
    // first to a server that listens on 127.0.0.1 only.
    dns.lookup(host, { all: true }, (err, addresses) => {
      if (!this.#open[1]) return // given up meanwhile (connect timeout, kill, shutdown)
      if (err || addresses.length === 0) {
        this.#events.onError('target', err?.code ?? err?.message ?? 'ENOTFOUND')
        return
      }
      this.#untried = addresses.slice(1)
      this.#connectTo(addresses[0]!)
    })
  }

  abandonConnect(): void {
    this.#untried = NO_ADDRESSES
    this.#connecting = false
    this.#relay.destroy(1)
  }

  #connectTo({ address, family }: dns.LookupAddress): void {
    this.#targetHost = address
    // Only after connect(), which gave the keepalive.
    const k = this.#keepalive!
    const failed = this.#relay.connect(address, this.#port, family, CONNECT_KEEPALIVE | CONNECT_START, k.idle, k.interval, k.count, userTimeoutMs(k))
    // Reported like an asynchronous failure, after the caller is done.
    if (failed !== null) queueMicrotask(() => this.#open[1] && this.#onConnectError(failed))
  }

  /** The next address of the target's name, if any is left; else the connect has failed. */
  #onConnectError(code: string): void {
    const [next, ...rest] = this.#untried
    if (next === undefined) {
      this.#connecting = false
      this.#events.onError('target', code)
      return
    }
    this.#deps.logger.debug({ session: this.#events.id, target: this.targetAddress, error: code }, 'target address failed, trying the next')
    this.#untried = rest
    this.#relay.destroy(1)
    this.#connectTo(next)
  }

  relay(): void {
    // Connected by connect(): relaying since (CONNECT_START).
    if (this.#keepalive === undefined) this.#relay.start()
  }

  onRelayEvent(kind: number, index: 0 | 1, errno: number): void {
    const leg = INDEX_LEG[index]!
    switch (kind) {
      case EV_CONNECT:
        this.#connecting = false
        // errno: a keepalive option the pump could not set on the connected leg (CONNECT_KEEPALIVE).
        this.#events.onTargetConnect(errno === 0 ? undefined : errnoName(errno))
        break
      case EV_EOF:
        this.#events.onEnd(leg)
        break
      case EV_ERROR:
        if (index === 1 && this.#connecting) this.#onConnectError(errnoName(errno))
        else this.#events.onError(leg, errnoName(errno))
        break
      case EV_CLOSE:
        if (this.#open[index]) {
          this.#open[index] = false
          this.#events.onClose(leg)
        }
        break
    }
  }

  /** A handler threw: the session fails (never throws). */
  onRelayFailure(err: unknown): void {
    this.#events.fail(err)
  }

  end(leg: Leg): void {
    const i = LEG_INDEX[leg]
    if (this.#relay.end(i)) this.#closed(i)
  }

  reset(leg: Leg): void {
    const i = LEG_INDEX[leg]
    this.#relay.reset(i)
    this.#closed(i)
  }

  destroy(leg: Leg): void {
    const i = LEG_INDEX[leg]
    this.#relay.destroy(i)
    this.#closed(i)
  }

  release(): void {}

  detach(): DetachedTransport | undefined {
    if (!this.#open[0] || !this.#open[1] || this.#connecting) return undefined
    const clientAddress = this.clientAddress
    const targetAddress = this.targetAddress
    const d = this.#relay.detach()
    if (d === null) return undefined
    this.#open = [false, false]
    const [clientFd, targetFd, clientFlags, targetFlags, fromClient, fromTarget, heldForClient, heldForTarget] = d
    const leg = (flags: number, held: Buffer | null): LegState => ({
      queued: held ?? NOTHING_HELD,
      endRequested: (flags & ADOPT_END_REQUESTED) !== 0,
      finSent: (flags & ADOPT_FIN_SENT) !== 0,
      endReceived: (flags & ADOPT_END_RECEIVED) !== 0,
      connecting: false,
    })
    return {
      fds: [clientFd, targetFd],
      state: { legs: { client: leg(clientFlags, heldForClient), target: leg(targetFlags, heldForTarget) }, bytesToTarget: fromClient, bytesToClient: fromTarget, clientAddress, targetAddress },
    }
  }

  /** Closed at the session's request: reported on a later tick, as Node reports 'close'. */
  #closed(i: 0 | 1): void {
    if (!this.#open[i]) return
    this.#open[i] = false
    if (i === 1) this.#connecting = false
    queueMicrotask(() => this.#events.onClose(INDEX_LEG[i]!))
  }
}

/**
 * A batch of clients the pump accepted ([fd, host, port, ...]), each taken in turn. Should taking
 * one throw (a bug), the others are still taken (their descriptors would leak otherwise) and the
 * first error is thrown after them.
 */
function acceptorOnBatch(this: { take: (client: PumpAccepted) => void; onError: (code: string) => void }, accepted: Array<number | string>, errno: number): void {
  let failure: { err: unknown } | undefined
  for (let i = 0; i + 2 < accepted.length; i += 3) {
    try {
      this.take({ pump: true, fd: accepted[i] as number, address: accepted[i + 1] as string, port: accepted[i + 2] as number })
    } catch (err) {
      failure ??= { err }
    }
  }
  if (errno !== 0) this.onError(errnoName(errno))
  if (failure !== undefined) throw failure.err
}

function adoptFlags(leg: LegState): number {
  return (leg.endRequested ? ADOPT_END_REQUESTED : 0) | (leg.finSent ? ADOPT_FIN_SENT : 0) | (leg.endReceived ? ADOPT_END_RECEIVED : 0)
}

/**
 * Called by the pump. Whatever the handler throws (a bug) fails this session, not the process:
 * both peers are reset and the log line says so; the pump fails the relay itself should even
 * that throw.
 */
function relayOnEvent(this: NativeTransport, kind: number, leg: 0 | 1, errno: number): void {
  try {
    this.onRelayEvent(kind, leg, errno)
  } catch (err) {
    this.onRelayFailure(err)
  }
}
