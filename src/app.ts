// The running proxy as a whole: one listener per route, the admin API, and reloads.
// A reload starts new routes, drains removed ones, and re-tunes the ones that stay,
// established sessions included; a route whose address changed is replaced.

import type { Logger } from 'pino'
import type { ProxyOptions } from './config/options.ts'
import type { LogOptions } from './log.ts'
import { formatEndpoint } from './config/endpoint.ts'
import { describeKeepalive } from './keepalive/settings.ts'
import { describeHeartbeat } from './config/heartbeat.ts'
import type { KeepaliveApplier } from './keepalive/socket-options.ts'
import { ProxyListener } from './listener.ts'
import { ProxyMetrics } from './admin/metrics.ts'
import { AdminServer, type AdminOptions, type AdminSource } from './admin/server.ts'
import type { Session } from './session.ts'

export interface AppConfig {
  routes: ProxyOptions[]
  admin: AdminOptions | undefined
  /** Seconds sessions get to finish on SIGINT/SIGTERM, and on routes removed by a reload. */
  shutdownGrace: number
  /** Where and how the process logs (the CLI sets its logger up from this). */
  log: LogOptions
}

const sameListen = (a: ProxyOptions, b: ProxyOptions): boolean =>
  a.listen.host === b.listen.host && a.listen.port === b.listen.port && a.native === b.native

const sameTargets = (a: ProxyOptions, b: ProxyOptions): boolean =>
  JSON.stringify([a.targets, a.balance, a.heartbeat]) === JSON.stringify([b.targets, b.balance, b.heartbeat])

export class ProxyApp implements AdminSource {
  readonly #routes = new Map<string, ProxyListener>()
  readonly #draining = new Set<Promise<void>>()
  readonly #keepalive: KeepaliveApplier
  readonly #logger: Logger
  readonly metrics: ProxyMetrics
  #admin: AdminServer | undefined
  #config: AppConfig | undefined

  constructor(keepalive: KeepaliveApplier, logger: Logger) {
    this.#keepalive = keepalive
    this.#logger = logger
    this.metrics = new ProxyMetrics(this)
  }

  /** Whether the native helper is in use (for ka_proxy_build_info). */
  get native(): boolean {
    return this.#keepalive.native
  }

  get config(): AppConfig | undefined {
    return this.#config
  }

  /** Starts every route and the admin API; on any failure, stops what had started and throws. */
  async start(config: AppConfig): Promise<void> {
    try {
      for (const options of config.routes) await this.#startRoute(options)
      if (config.admin) await this.#startAdmin(config.admin)
    } catch (err) {
      await this.stop(0)
      throw err
    }
    this.#config = config
  }

  /**
   * Applies a new, already validated config. Routes are matched by name: new ones start,
   * missing ones stop accepting and drain, changed listen addresses are replaced, and the
   * rest are re-tuned in place, live sessions included. Returns what changed.
   */
  async reload(config: AppConfig): Promise<{ started: string[]; removed: string[]; retuned: string[] }> {
    const started: string[] = []
    const removed: string[] = []
    const retuned: string[] = []
    const grace = config.shutdownGrace * 1000
    const wanted = new Map(config.routes.map((r) => [r.name, r]))
    for (const [name, listener] of this.#routes) {
      const next = wanted.get(name)
      if (next === undefined || !sameListen(listener.options, next)) {
        this.#routes.delete(name)
        this.#drainInBackground(listener, grace)
        if (next === undefined) removed.push(name)
      }
    }
    for (const options of config.routes) {
      const listener = this.#routes.get(options.name)
      if (listener === undefined) {
        await this.#startRoute(options)
        started.push(options.name)
        continue
      }
      const targetsChanged = !sameTargets(listener.options, options)
      const result = listener.retune(options, targetsChanged)
      // A reload is the operator's failback (--failback manual): back to the first target.
      listener.pool.failback()
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
    if (JSON.stringify(config.admin) !== JSON.stringify(this.#config?.admin)) {
      await this.#admin?.stop()
      this.#admin = undefined
      if (config.admin) await this.#startAdmin(config.admin)
    }
    this.#config = config
    return { started, removed, retuned }
  }

  async #startRoute(options: ProxyOptions): Promise<void> {
    const metrics = this.metrics
    const route = options.name
    const listener = new ProxyListener(options, this.#keepalive, this.#logger.child({ route }), {
      sessionOpened: () => metrics.sessionOpened(route),
      sessionClosed: (summary) => metrics.sessionClosed(route, summary),
      targetConnected: (seconds) => metrics.targetConnected(route, seconds),
      refused: (reason) => metrics.refused(route, reason),
    })
    const info = await listener.start()
    this.#routes.set(route, listener)
    this.#logger.info(
      {
        route,
        address: info.address,
        target: options.targets.map((t) => formatEndpoint(t.host, t.port)).join(','),
        heartbeat: options.heartbeat && describeHeartbeat(options.heartbeat),
        clientKeepalive: info.clientKeepalive,
        targetKeepalive: info.targetKeepalive,
        native: this.#keepalive.native,
        relay: listener.relay,
        inherited: info.inherited,
        maxConnections: options.maxConnections ?? null,
      },
      'listening',
    )
  }

  async #startAdmin(options: AdminOptions): Promise<void> {
    const admin = new AdminServer(options, this, this.metrics, this.#keepalive, this.#logger)
    const address = await admin.start()
    this.#admin = admin
    this.#logger.info({ address, token: options.token !== undefined }, 'admin listening')
  }

  #drainInBackground(listener: ProxyListener, graceMs: number): void {
    this.#logger.info({ route: listener.options.name, sessions: listener.sessions.size }, 'route removed: draining')
    const done = listener.stop(graceMs).finally(() => this.#draining.delete(done))
    this.#draining.add(done)
  }

  /** Stops accepting everywhere, lets sessions finish for `graceMs`, then closes the rest. */
  async stop(graceMs: number): Promise<void> {
    const all = [...this.#routes.values()].map((l) => l.stop(graceMs))
    this.#routes.clear()
    await Promise.all([...all, ...this.#draining])
    await this.#admin?.stop()
    this.#admin = undefined
  }

  /** Second signal: every session closed at once. */
  terminate(): void {
    for (const listener of this.#routes.values()) listener.terminate()
  }

  get sessionCount(): number {
    let n = 0
    for (const l of this.#routes.values()) n += l.sessions.size
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
      }
    }
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
}
