// The running proxy as a whole: one listener per route, the admin API, and reloads.
// A reload starts new routes, drains removed ones, and re-tunes the ones that stay,
// established sessions included; a route whose address changed is replaced.

import type { Logger } from 'pino'
import { rawOptionsOf, resolveOptions, type ProxyOptions, type RawOptions } from './config/options.ts'
import type { AppConfig } from './config/resolve.ts'
import { formatEndpoint } from './config/endpoint.ts'
import { describeKeepalive } from './keepalive/settings.ts'
import { describeHeartbeat } from './config/heartbeat.ts'
import type { SocketControl } from './socket-control.ts'
import { ProxyListener } from './listener.ts'
import { ProxyMetrics } from './admin/metrics.ts'
import { AdminServer, type AdminSource, type FailbackReport } from './admin/server.ts'
import type { AdminOptions } from './config/admin.ts'
import type { Session } from './session.ts'
import { defaultRelay } from './transport/registry.ts'
import type { TransportKind } from './transport/transport.ts'
import type { PoolState } from './targets.ts'
import { adminListenerKey, routeListenerKey, type HandedListener, type HandedSession, type InheritedListeners } from './upgrade.ts'
import type { AdoptedSession, ListenerInfo, MovedSession } from './listener.ts'
import { nextSessionIdValue } from './session.ts'
import type { FollowedChange } from './listener.ts'
import { LoopBalance, type WorkerGroup } from './workers.ts'

const sameListen = (a: ProxyOptions, b: ProxyOptions): boolean =>
  a.listen.host === b.listen.host && a.listen.port === b.listen.port && a.native === b.native && a.backlog === b.backlog

const sameTargets = (a: ProxyOptions, b: ProxyOptions): boolean =>
  JSON.stringify([a.targets, a.balance, a.heartbeat]) === JSON.stringify([b.targets, b.balance, b.heartbeat])

/** Same port: the two cannot both be bound (0.0.0.0:5432 and 127.0.0.1:5432 conflict too). */
const samePort = (a: { port: number }, b: { port: number }): boolean => a.port !== 0 && a.port === b.port

export class ProxyApp implements AdminSource {
  readonly #routes = new Map<string, ProxyListener>()
  /** Routes no longer accepting whose sessions still finish (stop, or removed by a reload). */
  readonly #draining = new Map<ProxyListener, Promise<void>>()
  /** Upgrade (v5): routes built on a handed-over listening socket, listening only after the commit. */
  readonly #deferred = new Map<string, number>()
  /** Upgrade: listeners of routes this config lacks, made for their adopted sessions; drained by finishAdoption. */
  readonly #adoptedRemoved = new Map<string, ProxyListener>()
  readonly #sockets: SocketControl
  readonly #logger: Logger
  /** The transport of every route's sessions (see transport/registry.ts). */
  readonly #relay: TransportKind
  readonly metrics: ProxyMetrics
  #admin: AdminServer | undefined
  #config: AppConfig | undefined
  /** A worker thread's app (src/workers.ts): targets followed, not checked; no process-wide metrics. */
  readonly #follower: boolean
  /** The main thread's worker threads with --workers (src/workers.ts); none by default. */
  #workers: WorkerGroup | undefined
  /** --workers: this loop's part in spreading sessions over the loops (src/workers.ts). */
  #balance: LoopBalance | undefined
  /** --workers: the shared counts and this loop's number in them, to rejoin after an upgrade that failed. */
  #loopSlot: { shared: SharedArrayBuffer; index: number } | undefined

  constructor(sockets: SocketControl, logger: Logger, relay: TransportKind = defaultRelay(sockets), { follower = false }: { follower?: boolean } = {}) {
    this.#sockets = sockets
    this.#logger = logger
    this.#relay = relay
    this.#follower = follower
    this.metrics = new ProxyMetrics(this, { processWide: !follower })
  }

  /**
   * --workers: the worker threads this app (the main thread's) speaks for: their sessions are in
   * /sessions, /metrics and the session count; stop, terminate and failback reach them; its
   * targets' changes go to them.
   */
  attachWorkers(workers: WorkerGroup): void {
    this.#workers = workers
  }

  get workers(): WorkerGroup | undefined {
    return this.#workers
  }

  /** --workers: this app is event loop `index` of those sharing `shared` (see LoopBalance). */
  balanceLoops(shared: SharedArrayBuffer, index: number): void {
    this.#loopSlot = { shared, index }
    for (const listener of this.#routes.values()) listener.shareAccepts()
    this.#balance = new LoopBalance(shared, index, () => this.#ownSessions(), (paused) => {
      for (const listener of this.#routes.values()) listener.balanceAccepting(paused)
    })
  }

  /**
   * --workers, a worker in an upgrade: it stops accepting (out of the balance: the other loops
   * take every client) and, if the upgrade fails, accepts again and rejoins the balance.
   */
  holdAccepting(held: boolean): void {
    const slot = this.#loopSlot
    if (held) {
      this.#balance?.leave()
      this.#balance = undefined
      for (const listener of this.#routes.values()) listener.balanceAccepting(true)
      return
    }
    for (const listener of this.#routes.values()) listener.balanceAccepting(false)
    if (slot !== undefined && this.#balance === undefined) this.balanceLoops(slot.shared, slot.index)
  }

  /**
   * --workers, the upgrade's first step: the sessions of every worker that can move come here and
   * carry on on this loop, so the hand-over moves them with this loop's own. A session that cannot
   * be carried on here (out of descriptors) is reset, both peers, with one line.
   */
  async gatherFromWorkers(closeReset: (fd: number) => void): Promise<{ sessions: number; refused: number }> {
    const workers = this.#workers
    if (workers === undefined) return { sessions: 0, refused: 0 }
    const handed = await workers.handOver()
    const { adopted, refused } = this.adoptSessions(handed, undefined, { own: true, release: (s) => s.fds.forEach(closeReset) })
    for (const a of adopted) a.start()
    if (refused.length > 0) this.#logger.error({ sessions: refused, reason: 'descriptor_limit' }, 'upgrade: sessions of the worker threads that this thread could not carry on are reset')
    return { sessions: adopted.length, refused: refused.length }
  }

  /** This loop's sessions (the workers' not counted). */
  #ownSessions(): number {
    let n = 0
    for (const l of this.#routes.values()) n += l.sessions.size
    for (const l of this.#draining.keys()) n += l.sessions.size
    return n
  }

  /** The listening socket of each route worker threads accept on too (not a pair's: see src/workers.ts). */
  workerListeners(): Map<string, number> {
    const out = new Map<string, number>()
    for (const [name, listener] of this.#routes) {
      const fd = listener.listenFd
      const { host, port } = listener.options.listen
      if (fd !== undefined && listener.options.pair === undefined) out.set(routeListenerKey(name, host, port), fd)
    }
    return out
  }

  /** A worker thread's app: the main thread's view of a route's targets (ProxyListener.followTargets). */
  followTargets(route: string, state: PoolState, change?: FollowedChange): void {
    this.#routes.get(route)?.followTargets(state, change)
  }

  /** Whether the native helper is in use (for ka_proxy_build_info). */
  get native(): boolean {
    return this.#sockets.native
  }

  get config(): AppConfig | undefined {
    return this.#config
  }

  /**
   * Starts every route and the admin API; on any failure, stops what had started and throws.
   * `inherited`: listening sockets handed over by an upgrade; a route (or the admin API) whose
   * address matches one listens on it instead of binding.
   */
  async start(config: AppConfig, inherited?: Pick<InheritedListeners, 'take' | 'targets'>, deferHandedOver = false): Promise<void> {
    try {
      for (const options of config.routes) {
        const fd = inherited?.take(routeListenerKey(options.name, options.listen.host, options.listen.port))
        const targets = inherited && Object.hasOwn(inherited.targets, options.name) ? inherited.targets[options.name] : undefined
        if (fd !== undefined && deferHandedOver) {
          // Built, not accepting: the listening socket is still the old process's to accept on.
          this.#routes.set(options.name, this.#newListener(options, targets))
          this.#deferred.set(options.name, fd)
          continue
        }
        this.#routes.set(options.name, await this.#bindRoute(options, fd, targets))
      }
      if (config.admin) this.#admin = await this.#bindAdmin(config.admin, inherited?.take(adminListenerKey(config.admin.listen.host, config.admin.listen.port)))
    } catch (err) {
      await this.stop(0)
      throw err
    }
    this.#config = config
  }

  /**
   * Applies a new, already validated config, all or nothing. First everything new is bound
   * (routes added, routes whose listen address changed, a moved admin API); only when all
   * of it is bound does the switch happen: removed and moved routes stop accepting and
   * drain, the others are re-tuned in place, live sessions included. If any bind fails,
   * what was bound is closed and the running config stays exactly as it was.
   */
  async reload(config: AppConfig, listening?: Pick<InheritedListeners, 'take'>): Promise<{ started: string[]; removed: string[]; retuned: string[] }> {
    const wanted = new Map(config.routes.map((r) => [r.name, r]))
    const stays = (name: string, listener: ProxyListener): boolean => {
      const next = wanted.get(name)
      return next !== undefined && sameListen(listener.options, next)
    }
    const leaving = [...this.#routes].filter(([name, l]) => !stays(name, l)).map(([, l]) => l)
    const fresh = config.routes.filter((o) => {
      const running = this.#routes.get(o.name)
      return running === undefined || !stays(o.name, running)
    })
    const oldAdmin = this.#config?.admin
    const adminMoved = JSON.stringify(config.admin?.listen) !== JSON.stringify(oldAdmin?.listen)
    // A leaving route (or the old admin API) that holds a port wanted again stops listening
    // first; the rollback listens again.
    const handOver = leaving.filter((l) => fresh.some((o) => samePort(o.listen, l.options.listen)) || (adminMoved && config.admin !== undefined && samePort(config.admin.listen, l.options.listen)))
    const adminHandOver = adminMoved && this.#admin !== undefined && oldAdmin !== undefined &&
      (config.admin === undefined ? false : samePort(config.admin.listen, oldAdmin.listen) || fresh.some((o) => samePort(o.listen, oldAdmin.listen)))
    const bound = new Map<string, ProxyListener>()
    let newAdmin: AdminServer | undefined
    try {
      for (const l of handOver) l.unbind()
      if (adminHandOver) await this.#admin!.stop()
      // A worker thread's routes listen on the main thread's sockets (`listening`), never bind.
      for (const options of fresh) bound.set(options.name, await this.#bindRoute(options, listening?.take(routeListenerKey(options.name, options.listen.host, options.listen.port))))
      if (adminMoved && config.admin) newAdmin = await this.#bindAdmin(config.admin)
    } catch (err) {
      await Promise.all([...bound.values()].map((l) => l.stop(0)))
      for (const l of handOver) await this.#rebind(l)
      if (adminHandOver) this.#admin = await this.#bindAdmin(oldAdmin!).catch((e: unknown) => {
        this.#logger.error({ err: e }, 'admin API cannot listen again after a rejected reload')
        return undefined
      })
      throw err
    }
    // Everything is bound: switch.
    const grace = config.shutdownGrace * 1000
    const removed: string[] = []
    for (const listener of leaving) {
      const name = listener.options.name
      this.#routes.delete(name)
      this.#drainInBackground(listener, grace)
      if (!wanted.has(name)) removed.push(name)
    }
    const retuned: string[] = []
    for (const options of config.routes) {
      const listener = this.#routes.get(options.name)
      if (listener === undefined) continue
      const targetsChanged = !sameTargets(listener.options, options)
      const result = listener.retune(options, targetsChanged)
      if (result.changed) {
        retuned.push(options.name)
        this.#logger.info(
          {
            route: options.name,
            sessions: result.sessions,
            readBack: result.readBack,
            targetsChanged,
            clientKeepalive: describeKeepalive(options.keepalive.client),
            targetKeepalive: describeKeepalive(options.keepalive.target),
          },
          'route re-tuned',
        )
      }
    }
    for (const [name, listener] of bound) {
      this.#routes.set(name, listener)
      if (this.#balance === undefined) continue
      listener.shareAccepts()
      if (this.#balance.paused) listener.balanceAccepting(true)
    }
    if (adminMoved) {
      if (!adminHandOver) await this.#admin?.stop()
      this.#admin = newAdmin
    } else if (this.#admin !== undefined && config.admin !== undefined) {
      this.#admin.token = config.admin.token
    }
    this.#config = config
    return { started: [...bound.keys()], removed, retuned }
  }

  /** A leaving route's listening socket, back after a rejected reload. */
  async #rebind(listener: ProxyListener, after = 'a rejected reload'): Promise<void> {
    try {
      await listener.rebind()
    } catch (err) {
      this.#logger.error({ route: listener.options.name, err }, `route cannot listen again after ${after}`)
    }
  }

  /**
   * Upgrade (v5), once the old process committed: the routes built on listening sockets handed
   * over (start's deferHandedOver) accept on them from now. A socket that cannot be listened on
   * is closed with one line; the route stays without a listener.
   */
  async listenHandedOver(): Promise<void> {
    for (const [name, fd] of this.#deferred) {
      const listener = this.#routes.get(name)
      this.#deferred.delete(name)
      if (listener === undefined) continue
      try {
        this.#logListening(listener, await listener.start(fd), fd)
      } catch (err) {
        this.#logger.error({ route: name, error: (err as Error).message }, 'upgrade: a listening socket handed over cannot be listened on')
      }
    }
  }

  /** How many handed-over listening sockets wait for listenHandedOver. */
  get deferredListeners(): number {
    return this.#deferred.size
  }

  /** Upgrade (v5), the old process at the commit: its routes stop accepting (the new process's copies accept). */
  stopAccepting(): void {
    for (const listener of this.#routes.values()) listener.unbind()
  }

  /** Upgrade (v5), the new process failed after the commit: the routes listen again. */
  async resumeAccepting(): Promise<void> {
    for (const listener of this.#routes.values()) await this.#rebind(listener, 'a failed upgrade')
  }

  /** Binds a route's listener (not yet registered), or listens on `fd`; rejects with ListenError. */
  /** `targets`: the targets' health as the process being upgraded knew it, taken over before the checks start. */
  async #bindRoute(options: ProxyOptions, fd?: number, targets?: unknown): Promise<ProxyListener> {
    const listener = this.#newListener(options, targets)
    this.#logListening(listener, await listener.start(fd), fd)
    return listener
  }

  #logListening(listener: ProxyListener, info: ListenerInfo, fd: number | undefined): void {
    const options = listener.options
    const route = options.name
    this.#logger.info(
      {
        route,
        address: info.address,
        target: options.targets.map((t) => formatEndpoint(t.host, t.port)).join(','),
        heartbeat: options.heartbeat && describeHeartbeat(options.heartbeat),
        clientKeepalive: info.clientKeepalive,
        targetKeepalive: info.targetKeepalive,
        native: this.#sockets.native,
        relay: listener.relay,
        inherited: info.inherited,
        maxConnections: options.maxConnections ?? null,
        backlog: info.backlog,
        ...(fd !== undefined && { handedOver: true }),
      },
      'listening',
    )
  }

  /** A route's listener, counted in the metrics, not yet listening; `targets` as in #bindRoute. */
  #newListener(options: ProxyOptions, targets?: unknown): ProxyListener {
    const metrics = this.metrics
    const route = options.name
    const listener: ProxyListener = new ProxyListener(options, this.#sockets, this.#logger.child({ route }), {
      sessionOpened: () => {
        metrics.sessionOpened(route)
        this.#balance?.changed()
      },
      sessionClosed: (summary) => {
        metrics.sessionClosed(route, summary)
        this.#balance?.changed()
      },
      targetConnected: (seconds) => metrics.targetConnected(route, seconds),
      refused: (reason) => metrics.refused(route, reason),
      pairResumed: () => metrics.pairResumed(route),
      targetChanged: (change) => this.#workers?.targetChanged(route, listener.pool.exportState(), change),
    }, this.#relay, this.#follower)
    if (targets !== undefined) listener.pool.importState(targets)
    return listener
  }

  async #bindAdmin(options: AdminOptions, fd?: number): Promise<AdminServer> {
    const admin = new AdminServer(options, this, this.metrics, this.#sockets, this.#logger)
    const address = await admin.start(fd)
    this.#logger.info({ address, token: options.token !== undefined }, 'admin listening')
    return admin
  }

  #drainInBackground(listener: ProxyListener, graceMs: number): void {
    this.#logger.info({ route: listener.options.name, sessions: listener.sessions.size }, 'route removed: draining')
    this.#stopInBackground(listener, graceMs)
  }

  #stopInBackground(listener: ProxyListener, graceMs: number): Promise<void> {
    const done = listener.stop(graceMs).finally(() => this.#draining.delete(listener))
    this.#draining.set(listener, done)
    return done
  }

  /** Stops accepting everywhere, lets sessions finish for `graceMs`, then closes the rest. */
  async stop(graceMs: number): Promise<void> {
    this.#balance?.leave()
    for (const listener of this.#routes.values()) this.#stopInBackground(listener, graceMs)
    this.#routes.clear()
    await Promise.all([...this.#draining.values(), this.#workers?.stop(graceMs)])
    await this.#admin?.stop()
    this.#admin = undefined
  }

  /**
   * After an upgrade: the admin API's listening socket is the new process's (or closed by it), so
   * this one stops answering at once instead of after its drain. Else it would answer on the
   * same socket as the new one, half the requests, with no routes (/healthz 503, /metrics
   * without the sessions that moved).
   */
  async releaseAdmin(): Promise<void> {
    const admin = this.#admin
    this.#admin = undefined
    await admin?.stop()
  }

  /** Second signal: every session closed at once, in running and draining routes alike. */
  terminate(): void {
    this.#workers?.terminate()
    for (const listener of [...this.#routes.values(), ...this.#draining.keys()]) listener.terminate()
  }

  /** The listening sockets an upgrade hands over: every route's and the admin API's. */
  listeners(): Array<HandedListener & { fd: number }> {
    const out: Array<HandedListener & { fd: number }> = []
    for (const [name, listener] of this.#routes) {
      const fd = listener.listenFd
      const { host, port } = listener.options.listen
      if (fd !== undefined) out.push({ key: routeListenerKey(name, host, port), address: formatEndpoint(host, port), fd })
    }
    const adminFd = this.#admin?.listenFd
    const admin = this.#config?.admin
    if (adminFd !== undefined && admin !== undefined) {
      out.push({ key: adminListenerKey(admin.listen.host, admin.listen.port), address: formatEndpoint(admin.listen.host, admin.listen.port), fd: adminFd })
    }
    return out
  }

  /** Each route's keepalive settings, which its sessions' sockets have, for an upgrade. */
  keepaliveStates(): Record<string, ProxyOptions['keepalive']> {
    return Object.fromEntries([...this.#routes].map(([name, listener]) => [name, listener.options.keepalive]))
  }

  /** Each route's targets as its pool knows them (health, failed connects, the one in use), for an upgrade. */
  targetStates(): Record<string, PoolState> {
    return Object.fromEntries([...this.#routes].map(([name, listener]) => [name, listener.pool.exportState()]))
  }

  /** Upgrade: the sessions that can move leave the running routes named, or (undefined) all (see ProxyListener.handOverSessions). */
  handOverSessions(routes: ReadonlySet<string> | undefined, limit = Infinity, skip?: ReadonlySet<number>, paired = false): Array<MovedSession & { route: string }> {
    const out: Array<MovedSession & { route: string }> = []
    for (const [route, listener] of this.#routes) {
      if (routes !== undefined && !routes.has(route)) continue
      if (out.length >= limit) break
      for (const moved of listener.handOverSessions(limit - out.length, skip, paired)) out.push({ ...moved, route })
    }
    return out
  }

  /** Upgrade: sessions of the running routes that cannot move yet but will shortly (ProxyListener.settlingSessions). */
  get settlingSessions(): number {
    let n = 0
    for (const listener of this.#routes.values()) n += listener.settlingSessions
    return n
  }

  /**
   * After an upgrade that moved the sessions: a far end's pair links close, so their near ends
   * resume on the new process at once (ProxyListener.closePairLinks); one line if sessions that
   * stayed here ended with them.
   */
  closePairLinks(): void {
    for (const [route, listener] of this.#routes) {
      const lost = listener.closePairLinks()
      if (lost > 0) this.#logger.warn({ route, sessions: lost }, 'upgrade: paired sessions that could not move end with the pair links (pair_lost)')
    }
  }

  /** Upgrade: each running route the new config lacks (not in `kept`), as its config would write it. */
  removedRoutes(kept: ReadonlySet<string>): Record<string, RawOptions> {
    return Object.fromEntries([...this.#routes].filter(([name]) => !kept.has(name)).map(([name, listener]) => [name, rawOptionsOf(listener.options)]))
  }

  /** A failed upgrade: the sessions handed over carry on here, from the state they left in. */
  takeBack(sessions: Array<MovedSession & { route: string }>): void {
    const { adopted, refused } = this.adoptSessions(sessions.map((m) => ({ route: m.route, identity: m.identity, target: m.target, state: m.transport.state, fds: m.transport.fds })))
    for (const a of adopted) a.start()
    if (refused.length > 0) this.#logger.error({ sessions: refused }, 'upgrade failed and these sessions could not be carried on here: they are closed')
  }

  /** Upgrade: sessions on a transport that cannot hand them over (ProxyListener.movable); they finish here. */
  get unmovableSessions(): number {
    let n = 0
    for (const l of [...this.#routes.values(), ...this.#draining.keys()]) if (!l.movable) n += l.sessions.size
    return n
  }

  get nextSessionId(): number {
    return nextSessionIdValue()
  }

  /**
   * Upgrade, the new process: the sessions handed over join their routes, built but not moving
   * bytes until each `start()` (once the old process has been told). `refused`: ids that could
   * not be carried on (no such route, out of descriptors); the old process keeps those.
   * `from.removed` (v3): routes this config lacks, with their settings as the old process ran
   * them; their sessions join a listener of that route that never listens and drains at once,
   * exactly as a reload drains a removed route (shutdownGrace, then a FIN to each peer), from
   * finishAdoption: at once unless `more` (v5: more sessions may follow in later messages).
   * `own`: the sessions take the descriptors given (received by this process for them), none is
   * duplicated; else each takes duplicates and the caller closes its own. `release`: called with
   * each session refused, whose descriptors are still the caller's.
   */
  adoptSessions(
    sessions: Array<HandedSession & { fds: number[] }>,
    from?: Pick<InheritedListeners, 'removed' | 'targets' | 'keepalive'>,
    { more = false, own = false, release }: { more?: boolean; own?: boolean; release?: (s: HandedSession & { fds: number[] }) => void } = {},
  ): { adopted: AdoptedSession[]; refused: number[] } {
    const adopted: AdoptedSession[] = []
    const refused: number[] = []
    const removed = this.#adoptedRemoved
    // Sockets keep their options: set again only where this config's differ from what the old
    // process set (v5 says which); compared once per route.
    const tunedRoutes = new Map<ProxyListener, boolean>()
    const tuned = (route: string, listener: ProxyListener): boolean => {
      let same = tunedRoutes.get(listener)
      if (same === undefined) {
        same = from !== undefined && Object.hasOwn(from.keepalive, route) && JSON.stringify(from.keepalive[route]) === JSON.stringify(listener.options.keepalive)
        tunedRoutes.set(listener, same)
      }
      return same
    }
    /** A removed route's listener, made at its first session; throws (ConfigError) on settings this release refuses. */
    const removedRoute = (name: string): ProxyListener | undefined => {
      if (from === undefined || !Object.hasOwn(from.removed, name)) return undefined
      let listener = removed.get(name)
      if (listener === undefined) {
        const options = resolveOptions({ ...(from.removed[name] as RawOptions), name }, (path) => `upgrade hand-over: removed route ${name}: ${path.join('.')}`)
        listener = this.#newListener(options, Object.hasOwn(from.targets, name) ? from.targets[name] : undefined)
        removed.set(name, listener)
      }
      return listener
    }
    for (const s of sessions) {
      try {
        const listener = this.#routes.get(s.route) ?? removedRoute(s.route)
        if (listener === undefined) throw new Error(`route ${s.route} is not in this config`)
        adopted.push(listener.adoptSession(s.identity, s.target, s.fds, s.state, tuned(s.route, listener), own))
      } catch (err) {
        this.#logger.warn({ session: s.identity.id, route: s.route, error: (err as Error).message }, 'upgrade: a session handed over cannot be carried on; the old process keeps it')
        refused.push(s.identity.id)
        release?.(s)
      }
    }
    if (!more) this.finishAdoption()
    return { adopted, refused }
  }

  /** Upgrade: every session has been adopted; the routes this config lacks drain theirs now. */
  finishAdoption(): void {
    const graceMs = (this.#config?.shutdownGrace ?? 0) * 1000
    for (const listener of this.#adoptedRemoved.values()) {
      listener.watchTargets()
      this.#drainInBackground(listener, graceMs)
    }
    this.#adoptedRemoved.clear()
  }

  /** This thread's sessions and, with --workers, the worker threads' (as they last said). */
  get sessionCount(): number {
    let n = this.#workers?.sessionCount ?? 0
    for (const l of [...this.#routes.values(), ...this.#draining.keys()]) n += l.sessions.size
    return n
  }

  // AdminSource: what the admin API and metrics read.

  *routes() {
    for (const [name, listener] of this.#routes) {
      yield {
        name,
        activeSessions: listener.sessions.size,
        openBytes() {
          let toTarget = 0
          let toClient = 0
          for (const s of listener.sessions) {
            toTarget += s.bytesToTarget
            toClient += s.bytesToClient
          }
          return { toTarget, toClient }
        },
        targets: () => listener.pool.targets.map((t) => ({ address: t.name, up: listener.pool.up(t) })),
        pairLinksUp: listener.pairLinksUp,
      }
    }
  }

  get loop(): number | undefined {
    return this.#workers === undefined ? undefined : 0
  }

  workerSessions(): Promise<string[]> {
    return this.#workers?.sessions() ?? Promise.resolve([])
  }

  workerMetrics(): Promise<unknown[]> {
    return this.#workers?.metrics() ?? Promise.resolve([])
  }

  *sessions(): Generator<{ route: string; session: Session }> {
    for (const [route, listener] of this.#routes) {
      for (const session of listener.sessions) yield { route, session }
    }
  }

  health(): Array<{ route: string; listening: boolean; targetsUp: number; targets: number }> {
    return [...this.#routes].map(([route, listener]) => ({
      route,
      listening: listener.state === 'running',
      targetsUp: listener.pool.targets.filter((t) => listener.pool.up(t)).length,
      targets: listener.pool.targets.length,
    }))
  }

  /** The operator's failback: every route (or the one named) sends new connections to its first target again. */
  failback(route: string | undefined): FailbackReport | undefined {
    if (route !== undefined && !this.#routes.has(route)) return undefined
    const routes: FailbackReport = []
    for (const [name, listener] of this.#routes) {
      if (route !== undefined && name !== route) continue
      const move = listener.pool.failback()
      this.#workers?.failback(name)
      routes.push({ route: name, moved: move !== undefined, to: listener.pool.targets[0]!.name, ...(move && { from: move.from }) })
    }
    return routes
  }
}
