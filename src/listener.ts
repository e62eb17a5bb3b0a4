// The accept loop: one listening socket, the set of live sessions, and the way the
// whole thing stops. RUNNING -> DRAINING (not accepting, sessions finish) -> CLOSED.
// Also what happens to sessions when a heartbeat marks their target down (on-down).

import { readFileSync } from 'node:fs'
import net, { type AddressInfo, type Server, type Socket } from 'node:net'
import type { Logger } from 'pino'
import { formatEndpoint } from './config/endpoint.ts'
import type { ProxyOptions } from './config/options.ts'
import { ListenError } from './errors.ts'
import { fdOf, noDelay, type AppliedKeepalive, type SocketControl } from './socket-control.ts'
import { onAccepted, peerOf, resetAccepted, type Accepted } from './accept.ts'
import { Session, type LegHandle, type SessionContext, type SessionIdentity, type SessionSummary } from './session.ts'
import { defaultRelay, openTransports } from './transport/registry.ts'
import type { DetachedTransport, TargetEndpoint, Transport, TransportAcceptor, TransportEvents, TransportKind, TransportState, Transports } from './transport/transport.ts'
import { PairTransports } from './pair/transport.ts'
import { handleFd } from './node-internals.ts'
import { TargetPool, type PoolState, type Target, type TargetChange } from './targets.ts'
import { LOCAL_RESOURCE_ERRORS, RefusalLog, withinDescriptorReserve, type RefusalReason } from './refusals.ts'

/** How often legs paused by backpressure are checked for a dead peer. */
const PAUSED_CHECK_MS = 1000
/** --workers: clients a loop accepts per wake-up, so the other loops take the rest of a burst. */
const BALANCED_ACCEPTS = 2
/** Out of descriptors, the pump accepts again this much later (clients wait in the backlog meanwhile). */
const ACCEPT_RETRY_MS = 100

export type ListenerState = 'idle' | 'running' | 'draining' | 'closed'

export interface ListenerInfo {
  address: string
  port: number
  clientKeepalive: AppliedKeepalive
  targetKeepalive: AppliedKeepalive
  /** True when accepted sockets inherit keepalive from the listening socket. */
  inherited: boolean
  /** The listen backlog asked for (the kernel caps it at net.core.somaxconn). */
  backlog: number
}

/** What the listener tells whoever counts (metrics); each is optional. */
export interface ListenerHooks {
  sessionOpened?(): void
  sessionClosed?(summary: SessionSummary): void
  /** Seconds from accepting the client to the target leg being connected. */
  targetConnected?(seconds: number): void
  /** A client turned away before a session started. */
  refused?(reason: RefusalReason): void
  /** Paired mode: a session resumed on a new link. */
  pairResumed?(): void
  /** A target's checks changed its state (before this listener's sessions hear of it). */
  targetChanged?(change: TargetChange): void
}

/** A target's change as a worker hears it from the main thread (src/workers.ts): plain data. */
export interface FollowedChange {
  target: string
  from: TargetChange['from']
  to: TargetChange['to']
  outcome: TargetChange['outcome']
}

/** A session an upgrade moves: who it is, where it goes, and its transport's state and sockets. */
export interface MovedSession {
  identity: SessionIdentity
  target: { host: string; port: number }
  transport: DetachedTransport
}

/** An adopted session, built but not moving bytes until `start` (after the hand-over is done). */
export interface AdoptedSession {
  session: Session
  start(): void
}

/** What a re-tune changed: sessions re-tuned, and how many legs read back as set. */
export interface RetuneResult {
  changed: boolean
  sessions: number
  readBack: { legs: number; matching: number } | null
}

export class ProxyListener {
  state: ListenerState = 'idle'
  readonly sessions = new Set<Session>()
  #options: ProxyOptions
  readonly #logger: Logger
  readonly #sockets: SocketControl
  readonly #hooks: ListenerHooks
  readonly #server: Server
  readonly #ctx: SessionContext
  #pool: TargetPool
  #drained: (() => void) | undefined
  readonly #deadCheck: NodeJS.Timeout
  readonly #transports: Transports
  readonly #refusals: RefusalLog
  /** The pump's hold of the listening socket, where it accepts (Node's server is then closed). */
  #acceptor: TransportAcceptor | undefined
  #resumeTimer: NodeJS.Timeout | undefined
  readonly #follows: boolean
  /** --workers: clients its acceptor takes per wake-up (shareAccepts); the pump's default when undefined. */
  #acceptBatch: number | undefined

  /**
   * `relay`: the transport that moves the bytes of this listener's sessions (chosen at the top:
   * see transport/registry.ts); by default the native pump when the native helper is in use.
   */
  /**
   * `follows`: a worker's listener (src/workers.ts), whose targets' health is the main thread's
   * (followTargets), with no checks of its own.
   */
  constructor(options: ProxyOptions, sockets: SocketControl, logger: Logger, hooks: ListenerHooks = {}, relay: TransportKind = defaultRelay(sockets), follows = false) {
    this.#follows = follows
    this.#options = options
    this.#logger = logger
    this.#sockets = sockets
    this.#hooks = hooks
    this.#refusals = new RefusalLog(logger, hooks.refused)
    // pauseOnConnect: nothing is read from a client before its target leg is up.
    this.#server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true })
    this.#pool = new TargetPool(options.targets, { balance: options.balance, failback: options.failback, heartbeat: options.heartbeat, logger, follows })
    this.#ctx = {
      targetKeepalive: options.keepalive.target,
      sockets,
      clientKeepalivePerSocket: undefined,
      connectTimeoutMs: options.connectTimeout * 1000,
      halfCloseTimeoutMs: options.halfCloseTimeout * 1000,
      flushTimeoutMs: options.flushTimeout * 1000,
      logger,
      onClosed: (session) => this.#onSessionClosed(session),
      onTargetConnected: (session) => {
        this.#pool.connectSucceeded(session.upstream as Target)
        hooks.targetConnected?.((performance.now() - session.startedAt) / 1000)
      },
      retarget: (session, error) => {
        this.#pool.connectFailed(session.upstream as Target, error)
        return this.state === 'running' ? this.#pool.pick(session.tried) : undefined
      },
    }
    // A pair route's sessions have a channel for one leg (src/pair/); the others, two sockets.
    this.#transports = options.pair === undefined ? openTransports(relay, { sockets, logger }) : new PairTransports(options.pair, { sockets, logger, refusals: this.#refusals, resumed: hooks.pairResumed, linkKeepalive: options.keepalive[options.pair.role === 'near' ? 'target' : 'client'] })
    this.#deadCheck = setInterval(checkPaused, PAUSED_CHECK_MS, this.#transports).unref()
  }

  /** Paired mode: the route's links up now (undefined for a plain route). */
  get pairLinksUp(): number | undefined {
    const t = this.#transports
    return t instanceof PairTransports ? t.linksUp : undefined
  }

  /** Which transport moves the bytes: the native pump, Node streams, or a pair's. */
  get relay(): Transports['kind'] {
    return this.#transports.kind
  }

  /**
   * Whether its sessions can move in an upgrade: the native pump exports a session's held bytes
   * and takes it on; Node streams hold bytes in their own buffers (read ahead, queued writes) that
   * no descriptor carries, so a session on them stays in its process to the end.
   */
  get movable(): boolean {
    return this.#transports.adopt !== undefined
  }

  /**
   * Binds and starts accepting; rejects with ListenError (in use, not permitted...). `fd`: a
   * listening socket handed over by the process being upgraded, listened on as it is.
   */
  async start(fd?: number): Promise<ListenerInfo> {
    const transports = this.#transports
    // A pair's far end accepts pair links instead of clients: its sessions start from their OPEN.
    const far = transports instanceof PairTransports && this.#options.pair?.role === 'far'
    const { inherited, addr } = far ? { inherited: false, addr: await this.#listenPair(transports, fd) } : await this.#listen(fd)
    this.state = 'running'
    this.watchTargets()
    const clientKa = this.#options.keepalive.client
    return {
      address: formatEndpoint(addr.address, addr.port),
      port: addr.port,
      clientKeepalive: this.#sockets.effective(clientKa),
      targetKeepalive: this.#sockets.effective(this.#options.keepalive.target),
      inherited,
      backlog: this.#options.backlog ?? systemBacklog(),
    }
  }

  /** A pair's far end: links accepted on the route's pair address (or `fd`, handed over); each OPEN a session. */
  async #listenPair(transports: PairTransports, fd?: number): Promise<AddressInfo> {
    const { host, port } = this.#options.listen
    try {
      return await transports.listen(host, port, (open) => this.#startSession(open, (reason, fields) => this.#refusals.refused(reason, fields)), fd)
    } catch (err) {
      throw new ListenError(formatEndpoint(host, port), err as NodeJS.ErrnoException, this.#options.listenKey)
    }
  }

  /**
   * Starts the targets' checks (on-down applies to the sessions). `start` does it; a route the new
   * config of an upgrade lacks, whose sessions were handed over to drain, never listens but is
   * checked as a removed route draining after a reload is, until it stops.
   */
  watchTargets(): void {
    this.#pool.start((change) => this.#onTargetChange(change))
  }

  /**
   * Binds the listening socket and hooks the accepts; returns whether keepalive is inherited, and
   * the address bound. Node binds (addresses, dual stack, errors as every Node server has them);
   * where the transport accepts by itself (the pump), it takes the listening socket over and
   * Node's server closes its copy.
   */
  async #listen(fd?: number): Promise<{ inherited: boolean; addr: AddressInfo }> {
    const { host, port } = this.#options.listen
    const shown = formatEndpoint(host, port)
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => reject(new ListenError(shown, err, this.#options.listenKey))
      this.#server.once('error', onError)
      const backlog = this.#options.backlog ?? systemBacklog()
      const listening = (): void => {
        this.#server.off('error', onError)
        resolve()
      }
      // A descriptor handed over is listened on again, which sets the backlog anew; Node takes
      // it from the argument there (listen(handle, backlog)), not from the options.
      if (fd === undefined) this.#server.listen({ host, port, backlog }, listening)
      else this.#server.listen({ fd }, backlog, listening)
    })
    // Set before the first accept (accepts run on a later loop turn than the listen callback).
    const clientKa = this.#options.keepalive.client
    const inherited = this.#sockets.applyToListener(this.#server, clientKa)
    this.#ctx.clientKeepalivePerSocket = inherited ? undefined : clientKa
    // A second bind (rebind) hooks the new handle; the listeners of the first one go.
    this.#server.removeAllListeners('connection')
    this.#server.removeAllListeners('error')
    // Inherited by every accepted socket; where the listening handle cannot take it, each gets its own.
    const inheritsNoDelay = noDelay(this.#server)
    const addr = this.#server.address() as AddressInfo
    const acceptOn = this.#transports.acceptOn
    if (acceptOn !== undefined && inherited && inheritsNoDelay) {
      this.#acceptor = acceptOn.call(this.#transports, handleFd(this.#server)!, (client) => this.#onConnection(client), (code) => this.#onAcceptorError(code))
      if (this.#acceptBatch !== undefined) this.#acceptor.batch(this.#acceptBatch)
      this.#server.close()
      return { inherited, addr }
    }
    if (!inheritsNoDelay) this.#server.on('connection', noDelay)
    onAccepted(this.#server, this.#transports.takesHandles, (client) => this.#onConnection(client), (err) => this.#onAcceptError(err))
    return { inherited, addr }
  }

  /** A pair's far end: its transports, which listen for links instead of clients. */
  get #farPair(): PairTransports | undefined {
    const t = this.#transports
    return t instanceof PairTransports && this.#options.pair?.role === 'far' ? t : undefined
  }

  /** Whether the listening socket is open (Node's, the acceptor's, or a far end's pair address). */
  get #bound(): boolean {
    return this.#acceptor !== undefined || this.#server.listening || this.#farPair?.listenFd !== undefined
  }

  /** Closes the listening socket, whoever holds it; resolves once it is closed. */
  #closeListening(): Promise<void> {
    this.#farPair?.stopListening()
    if (this.#acceptor !== undefined) {
      clearTimeout(this.#resumeTimer)
      this.#acceptor.close()
      this.#acceptor = undefined
    }
    if (!this.#server.listening) return Promise.resolve()
    return new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  /**
   * Closes the listening socket, nothing else: a reload that gives this route's port to a
   * new route does this before binding it, and `rebind` undoes it if the reload fails.
   */
  unbind(): void {
    void this.#closeListening()
  }

  /** Listens again after `unbind` (a reload was rejected). */
  async rebind(): Promise<void> {
    if (this.state !== 'running' || this.#bound) return
    const far = this.#farPair
    if (far !== undefined) await this.#listenPair(far)
    else await this.#listen()
  }

  /** The listening socket's descriptor (for the upgrade hand-over; a far end's: its pair address); undefined when not listening. */
  get listenFd(): number | undefined {
    const far = this.#farPair
    if (far !== undefined) return far.listenFd
    if (this.#acceptor !== undefined) return this.#acceptor.fd
    return this.#server.listening ? handleFd(this.#server) : undefined
  }

  /** The options in force (a reload may have replaced those it started with). */
  get options(): ProxyOptions {
    return this.#options
  }

  /** The targets and their health (for status and metrics). */
  get pool(): TargetPool {
    return this.#pool
  }

  #onConnection(client: Accepted): void {
    if (this.state !== 'running') {
      resetAccepted(client)
      return
    }
    const fd = fdOf(client)
    const reserve = withinDescriptorReserve(fd)
    if (!reserve.ok) {
      this.#refuse(client, 'descriptor_limit', { fd, limit: reserve.limit })
      return
    }
    const transports = this.#transports
    this.#startSession((events) => transports.accept(client, events), (reason, fields) => this.#refuse(client, reason, fields))
  }

  /**
   * A new session, unless the route refuses it (max connections, no healthy target, out of
   * descriptors: `refuse` says so to whoever asked); `open` builds its transport. Whether it started.
   */
  #startSession(open: (events: TransportEvents) => Transport, refuse: (reason: RefusalReason, fields: object) => void): boolean {
    if (this.state !== 'running') return false
    const max = this.#options.maxConnections
    if (max !== undefined && this.sessions.size >= max) {
      refuse('max_connections', { maxConnections: max })
      return false
    }
    const upstream = this.#pool.pick()
    if (upstream === undefined) {
      refuse('no_healthy_target', { targets: this.#pool.targets.map((t) => t.name) })
      return false
    }
    let session: Session
    try {
      session = new Session(this.#ctx, upstream, open)
    } catch (err) {
      // Out of descriptors or memory: this client is turned away, the others go on.
      const code = (err as NodeJS.ErrnoException).code ?? ''
      refuse(LOCAL_RESOURCE_ERRORS.has(code) ? 'descriptor_limit' : 'cannot_start', { error: code || String(err) })
      return false
    }
    this.sessions.add(session)
    this.#hooks.sessionOpened?.()
    // Building the fields costs a getpeername per open: only when someone reads them.
    if (this.#logger.isLevelEnabled('debug')) {
      this.#logger.debug({ session: session.id, client: session.clientAddress, target: upstream.name }, 'session opened')
    }
    session.start()
    return true
  }

  /** Refused at once with an RST, counted, and logged at most once a second per reason. */
  #refuse(client: Accepted, reason: RefusalReason, fields: object): void {
    this.#refusals.refused(reason, { client: peerOf(client), ...fields })
    resetAccepted(client)
  }

  /**
   * The pump stopped accepting: out of descriptors is a refusal like the others, and accepting
   * resumes a moment later (the waiting clients stay queued in the backlog meanwhile); anything
   * else is logged, and retried a second later.
   */
  #onAcceptorError(code: string): void {
    const resource = LOCAL_RESOURCE_ERRORS.has(code)
    if (resource) this.#refusals.refused('descriptor_limit', { error: code })
    else this.#logger.error({ error: code }, 'listener error')
    clearTimeout(this.#resumeTimer)
    this.#resumeTimer = setTimeout(resumeAcceptor, resource ? ACCEPT_RETRY_MS : PAUSED_CHECK_MS, this).unref()
  }

  /**
   * --workers: a burst of clients is shared out too: this loop takes a few per wake-up, and the
   * other loops, woken by the same burst, the rest.
   */
  shareAccepts(): void {
    this.#acceptBatch = BALANCED_ACCEPTS
    this.#acceptor?.batch(BALANCED_ACCEPTS)
  }

  /**
   * --workers: this event loop stops taking clients while others have fewer sessions (see
   * LoopBalance), or takes them again. Only where the pump accepts: Node's accepts go on.
   */
  balanceAccepting(paused: boolean): void {
    if (this.#acceptor === undefined || this.state !== 'running') return
    if (paused) this.#acceptor.pause()
    else this.resumeAccepting()
  }

  /** Called by the timer #onAcceptorError sets. */
  resumeAccepting(): void {
    try {
      this.#acceptor?.resume()
    } catch (err) {
      this.#onAcceptorError((err as NodeJS.ErrnoException).code ?? 'EUNKNOWN')
    }
  }

  /** An accept failed: out of descriptors is a refusal like the others; anything else is logged. */
  #onAcceptError(err: NodeJS.ErrnoException): void {
    if (LOCAL_RESOURCE_ERRORS.has(err.code ?? '')) this.#refusals.refused('descriptor_limit', { error: err.code })
    else this.#logger.error({ err }, 'listener error')
  }

  /**
   * Applies changed options to the running route (reload). Keepalive goes on the
   * listening socket, for sockets accepted from now on, and on both legs of every open
   * session, read back to confirm; timeouts apply to new timers; a changed target list or
   * heartbeat replaces the pool, and open sessions to a target that stays are watched by
   * its new checks (on-down applies to them as well).
   */
  retune(options: ProxyOptions, targetsChanged: boolean): RetuneResult {
    const before = JSON.stringify({ ...this.#options, name: undefined })
    this.#options = options
    const ctx = this.#ctx
    ctx.targetKeepalive = options.keepalive.target
    ctx.connectTimeoutMs = options.connectTimeout * 1000
    ctx.halfCloseTimeoutMs = options.halfCloseTimeout * 1000
    ctx.flushTimeoutMs = options.flushTimeout * 1000
    if (targetsChanged) {
      void this.#pool.stop()
      this.#pool = new TargetPool(options.targets, { balance: options.balance, failback: options.failback, heartbeat: options.heartbeat, logger: this.#logger, follows: this.#follows })
      // Open sessions follow their target into the new pool, so its checks cover them too.
      const byName = new Map(this.#pool.targets.map((t) => [t.name, t]))
      for (const session of this.sessions) session.upstream = byName.get(formatEndpoint(session.upstream.host, session.upstream.port)) ?? session.upstream
      this.#pool.start((change) => this.#onTargetChange(change))
    }
    const changed = before !== JSON.stringify({ ...options, name: undefined })
    if (!changed) return { changed, sessions: 0, readBack: null }
    const { client, target } = options.keepalive
    const listenFd = this.listenFd
    const inherited = listenFd !== undefined && this.#sockets.applyToListener(listenFd, client)
    ctx.clientKeepalivePerSocket = inherited ? undefined : client
    let legs = 0
    let matching = 0
    const applyLeg = (socket: LegHandle | undefined, wanted: typeof client): void => {
      if (socket === undefined) return
      try {
        this.#sockets.apply(socket, wanted)
        if (!this.#sockets.native) return
        legs++
        if (this.#sockets.check(socket, wanted).differs.length === 0) matching++
      } catch {
        // The leg closed meanwhile; its session is ending anyway.
      }
    }
    for (const session of this.sessions) {
      applyLeg(session.legHandle('client'), client)
      applyLeg(session.legHandle('target'), target)
    }
    return { changed, sessions: this.sessions.size, readBack: this.#sockets.native ? { legs, matching } : null }
  }

  /**
   * A target changed state. Down, with on-down kill: every session to it is reset, both
   * legs; drain: its sessions stay, new ones go elsewhere; keep: only this log line.
   * One line per change, with the number of sessions it concerned.
   */
  #onTargetChange(change: TargetChange): void {
    this.#hooks.targetChanged?.(change)
    const { target, from, to, outcome } = change
    const { onDown } = this.#options.heartbeat!
    const fields = { target: target.name, from, to, reason: outcome.reason, detail: outcome.detail, latencyMs: outcome.latencyMs }
    if (to === 'up') {
      this.#logger.info(fields, 'target up')
      return
    }
    let sessions = 0
    for (const session of this.sessions) {
      if (session.upstream !== target) continue
      sessions++
      if (onDown === 'kill') session.kill('target_down')
    }
    this.#logger.warn({ ...fields, onDown, [onDown === 'kill' ? 'closed' : 'kept']: sessions }, 'target down')
  }

  /**
   * A worker: the main thread's view of the targets (src/workers.ts), taken as it is; `change`,
   * when its checks changed a target's state, applies to this worker's sessions as a check here
   * would (on-down), with this worker's own line.
   */
  followTargets(state: PoolState, change?: FollowedChange): void {
    this.#pool.importState(state)
    if (change === undefined) return
    const target = this.#pool.targets.find((t) => t.name === change.target)
    if (target !== undefined) this.#onTargetChange({ ...change, target })
  }

  /**
   * Upgrade: every session that can move (at most `limit`, none of the ids in `skip`) leaves this listener
   * (Session.handOver) with no log line and no event; the others (connecting, ending) stay and
   * finish here.
   */
  handOverSessions(limit = Infinity, skip?: ReadonlySet<number>, paired = false): MovedSession[] {
    const out: MovedSession[] = []
    // A release that predates format 6 cannot carry a paired session on: they stay here.
    if (!paired && this.#options.pair !== undefined) return out
    for (const session of this.sessions) {
      if (out.length >= limit) break
      if (skip?.has(session.id)) continue
      const moved = session.handOver()
      if (moved === undefined) continue
      this.sessions.delete(session)
      out.push({ identity: moved.identity, target: { host: session.upstream.host, port: session.upstream.port }, transport: moved.transport })
    }
    if (this.sessions.size === 0) this.#drained?.()
    return out
  }

  /** Upgrade: sessions that cannot move yet but will shortly (Transport.settling). */
  get settlingSessions(): number {
    let n = 0
    for (const session of this.sessions) if (session.settling) n++
    return n
  }

  /**
   * After an upgrade that moved a far end's paired sessions: its pair links close (see
   * PairTransports.closeLinks); how many sessions that stayed here ended with them. 0 elsewhere.
   */
  closePairLinks(): number {
    return this.#farPair?.closeLinks() ?? 0
  }

  /**
   * Upgrade: carries on a session handed over (or taken back after a failed upgrade). Its target
   * is the pool's target of that address when there is one (health checks and on-down cover it).
   * Throws (EMFILE, a transport that cannot adopt) with nothing changed. `own`: the session takes
   * `fds` themselves (received for it); else duplicates, and the caller keeps its own. Either way
   * a throw leaves the caller's descriptors as they were.
   */
  adoptSession(identity: SessionIdentity, target: { host: string; port: number }, fds: readonly number[], state: TransportState, tuned = false, own = false): AdoptedSession {
    const transports = this.#transports
    if (transports.adopt === undefined) throw new Error(`the ${transports.kind} transport cannot adopt a session`)
    const key = formatEndpoint(target.host, target.port)
    const upstream: TargetEndpoint = this.#pool.targets.find((t) => formatEndpoint(t.host, t.port) === key) ?? { host: target.host, port: target.port }
    const session = new Session(this.#ctx, upstream, (events) => transports.adopt!(fds, state, events, own), identity)
    this.sessions.add(session)
    this.#hooks.sessionOpened?.()
    return { session, start: () => session.adopt(identity.ended, tuned ? undefined : this.#options.keepalive.client) }
  }

  #onSessionClosed(session: Session): void {
    this.sessions.delete(session)
    const summary = session.summary()
    this.#logger.info(summary, 'session closed')
    this.#hooks.sessionClosed?.(summary)
    if (this.sessions.size === 0) this.#drained?.()
  }

  /**
   * Stops accepting, lets sessions finish for up to `graceMs`, then closes the rest with
   * reason "shutdown". Resolves when every socket is closed.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.state === 'closed' || this.state === 'draining') return
    this.state = 'draining'
    // A far end goes on accepting links while it drains (a new session's OPEN is refused, as on
    // the links already up): a session whose link was down when the drain began can resume on a
    // new one and end in order, its FINs crossing, instead of waiting for a link that cannot come
    // (the near end then learns nothing before its resume window). Unless it was unbound already
    // (an upgrade's commit, a reload): then another process or route has the address.
    const serverClosed = this.#farPair === undefined ? this.#closeListening() : undefined
    if (this.sessions.size > 0) {
      this.#logger.info({ sessions: this.sessions.size, graceMs }, 'draining sessions')
      const drained = new Promise<void>((resolve) => (this.#drained = resolve))
      let timer: NodeJS.Timeout | undefined
      const graceOver = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))
      await Promise.race([drained, graceOver])
      clearTimeout(timer)
      if (this.sessions.size > 0) {
        for (const session of this.sessions) session.shutdown()
        await drained
      }
    }
    await (serverClosed ?? this.#closeListening())
    await this.#transports.close?.()
    await this.#pool.stop()
    clearInterval(this.#deadCheck)
    this.#refusals.flush()
    this.state = 'closed'
  }

  /** Ends every session at once (second signal). */
  terminate(): void {
    for (const session of this.sessions) session.shutdown()
  }
}

let somaxconn: number | undefined

/**
 * The most the kernel queues for a listening socket (net.core.somaxconn, read once): the default
 * backlog. Node's own default, 511, overflows into SYN cookies when an application fleet
 * reconnects at once. 4096 (the kernel's default since 5.4) where it cannot be read.
 */
export function systemBacklog(): number {
  if (somaxconn === undefined) {
    let value = NaN
    try {
      value = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim())
    } catch {
      // Not Linux, or /proc not mounted.
    }
    somaxconn = Number.isInteger(value) && value > 0 ? value : 4096
  }
  return somaxconn
}

function resumeAcceptor(listener: ProxyListener): void {
  listener.resumeAccepting()
}

function checkPaused(transports: Transports): void {
  transports.checkPaused()
}
