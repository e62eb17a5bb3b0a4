// The targets of a listener, in the order given, and which one a new connection goes to.
// With heartbeats, each target's checks drive its health; without, every target is used.
// Either way a failed connect counts against its target (passive health, like HAProxy's
// `observe layer4`): the session retries the next target (`retries` + `redispatch`), and new
// connections skip the failed one for a while. Failback to the first target is automatic or
// left to the operator (`--failback`). What the listener does to sessions when a target
// changes state is in listener.ts.

import dns from 'node:dns'
import { isIP } from 'node:net'
import type { Logger } from 'pino'
import { formatEndpoint, type Endpoint } from './config/endpoint.ts'
import type { HeartbeatSettings } from './config/heartbeat.ts'
import type { Balance, Failback } from './config/options.ts'
import type { Checker } from './heartbeat/checker.ts'
import { TargetHealth, type HealthChange, type HealthState } from './heartbeat/health.ts'
import { createChecker } from './heartbeat/registry.ts'
import { sharedScheduler, type CheckOutcome, type HeartbeatScheduler } from './heartbeat/scheduler.ts'

export class Target {
  readonly host: string
  readonly port: number
  /** host:port as logged. */
  readonly name: string
  readonly health: TargetHealth | undefined
  /** The last connect to it that failed, until one succeeds (passive health). */
  failure: { at: number; error: string } | undefined

  constructor(endpoint: Endpoint & { host: string }, heartbeat: HeartbeatSettings | undefined) {
    this.host = endpoint.host
    this.port = endpoint.port
    this.name = formatEndpoint(endpoint.host, endpoint.port)
    this.health = heartbeat ? new TargetHealth(heartbeat.fall, heartbeat.rise) : undefined
  }
}

/** A pool's knowledge as handed over in an upgrade (see exportState). */
export interface PoolState {
  active: string
  targets: Array<{
    name: string
    health: { state: HealthState; streak: number } | undefined
    failure: { ageMs: number; error: string } | undefined
  }>
}

export interface TargetChange extends HealthChange {
  target: Target
  /** The check that caused the change. */
  outcome: CheckOutcome
}

/**
 * How long new connections avoid a target after a connect to it failed, and how often a
 * name that did not resolve is looked up again (without heartbeats).
 */
export const PASSIVE_HOLD_MS = 5000

const DNS_ERRORS = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'ENODATA'])

export class TargetPool {
  readonly targets: readonly Target[]
  readonly #balance: Balance
  readonly #failback: Failback
  /** With balance first: the target new connections go to while it is available. */
  #active = 0
  #lookups: NodeJS.Timeout | undefined
  readonly #heartbeat: HeartbeatSettings | undefined
  readonly #scheduler: HeartbeatScheduler
  readonly #logger: Logger
  #checker: Checker | undefined
  #stops: Array<() => void> = []
  #next = 0
  /** A worker's pool (src/workers.ts): the main thread's checks decide, none run here. */
  readonly #follows: boolean

  constructor(
    endpoints: ReadonlyArray<Endpoint & { host: string }>,
    options: { balance: Balance; failback?: Failback; heartbeat: HeartbeatSettings | undefined; logger: Logger; scheduler?: HeartbeatScheduler; follows?: boolean },
  ) {
    this.#heartbeat = options.heartbeat
    this.#follows = options.follows === true
    this.targets = endpoints.map((e) => new Target(e, options.heartbeat))
    this.#balance = options.balance
    this.#failback = options.failback ?? 'manual'
    this.#logger = options.logger
    this.#scheduler = options.scheduler ?? sharedScheduler
  }

  /** Down targets get no new sessions, except with on-down keep, where checks only log. */
  routable(target: Target): boolean {
    return target.health === undefined || target.health.state !== 'down' || this.#heartbeat?.onDown === 'keep'
  }

  /** Routable and not avoided after a recent failed connect. */
  #fresh(target: Target, now: number): boolean {
    return this.routable(target) && (target.failure === undefined || now - target.failure.at >= PASSIVE_HOLD_MS)
  }

  /**
   * Whether /healthz and the target_up metric count the target as up: routable, its name
   * resolves, and no connect to it failed in the last PASSIVE_HOLD_MS.
   */
  up(target: Target): boolean {
    const f = target.failure
    return this.routable(target) && (f === undefined || (!DNS_ERRORS.has(f.error) && performance.now() - f.at >= PASSIVE_HOLD_MS))
  }

  /**
   * The target for a new connection (or for a retry: `tried` are the ones that failed it),
   * or undefined when none is healthy. Targets whose connect failed recently come last.
   */
  pick(tried?: ReadonlySet<object>): Target | undefined {
    // Runs once per session: two passes with no closure built per call.
    return this.#choose(tried, performance.now()) ?? this.#choose(tried, undefined)
  }

  /** Routable, not tried, and (with `now`) without a recent connect failure. */
  #usable(target: Target, tried: ReadonlySet<object> | undefined, now: number | undefined): boolean {
    return this.routable(target) && tried?.has(target) !== true && (now === undefined || this.#fresh(target, now))
  }

  #choose(tried: ReadonlySet<object> | undefined, now: number | undefined): Target | undefined {
    const n = this.targets.length
    const inOrder = this.#balance === 'first' && this.#failback === 'auto'
    const first = inOrder ? 0 : this.#balance === 'first' ? this.#active : this.#next
    for (let i = 0; i < n; i++) {
      const index = (first + i) % n
      const target = this.targets[index]!
      if (!this.#usable(target, tried, now)) continue
      if (inOrder) return target
      if (this.#balance === 'roundrobin') this.#next = (index + 1) % n
      else if (index !== this.#active) {
        this.#logger.warn({ from: this.targets[this.#active]!.name, to: target.name }, 'failover: new connections go to the next target')
        this.#active = index
      }
      return target
    }
    return undefined
  }

  /**
   * The operator's failback (--failback manual, asked for through the admin API): new
   * connections go to the first target again. Returns the move, or undefined when already there.
   */
  failback(): { from: string; to: string } | undefined {
    if (this.#active === 0) return undefined
    const move = { from: this.targets[this.#active]!.name, to: this.targets[0]!.name }
    this.#logger.info(move, 'failback: new connections go to the first target again')
    this.#active = 0
    return move
  }

  connectFailed(target: Target, error: string): void {
    target.failure = { at: performance.now(), error }
  }

  connectSucceeded(target: Target): void {
    target.failure = undefined
  }

  /**
   * Without heartbeats, names are looked up at start and, while one does not resolve, every
   * PASSIVE_HOLD_MS: /healthz then reports a target whose name is gone before a client fails on it.
   */
  #watchNames(): void {
    const names = this.targets.filter((t) => isIP(t.host) === 0)
    if (names.length === 0) return
    const lookUp = (all: boolean): void => {
      for (const target of names) {
        if (!all && !DNS_ERRORS.has(target.failure?.error ?? '')) continue
        dns.lookup(target.host, (err) => {
          if (err && DNS_ERRORS.has(err.code ?? '')) {
            if (target.failure === undefined) this.#logger.warn({ target: target.name, error: err.code }, 'target name does not resolve')
            target.failure = { at: performance.now(), error: err.code! }
          } else if (!err && DNS_ERRORS.has(target.failure?.error ?? '')) {
            target.failure = undefined
          }
        })
      }
    }
    lookUp(true)
    this.#lookups = setInterval(lookUp, PASSIVE_HOLD_MS, false).unref()
  }

  /**
   * What the pool knows, for the process that takes over in an upgrade: each target's health
   * and last failed connect (its age: performance.now() is per process), and the target new
   * connections go to. Plain data (JSON).
   */
  exportState(): PoolState {
    const now = performance.now()
    return {
      active: this.targets[this.#active]!.name,
      targets: this.targets.map((t) => ({
        name: t.name,
        health: t.health && { state: t.health.state, streak: t.health.streak },
        failure: t.failure && { ageMs: Math.max(0, Math.round(now - t.failure.at)), error: t.failure.error },
      })),
    }
  }

  /**
   * Takes over what the old process knew (before `start`), for the targets that are still in
   * the list (by name), so an upgrade neither flaps a target nor moves new connections.
   * Anything malformed is ignored: the targets then start as at a fresh start.
   */
  importState(state: unknown): void {
    const s = state as Partial<PoolState> | null
    if (s === null || typeof s !== 'object' || !Array.isArray(s.targets)) return
    const now = performance.now()
    const states = new Set<unknown>(['unknown', 'up', 'down'])
    for (const saved of s.targets) {
      const target = this.targets.find((t) => t.name === saved?.name)
      if (target === undefined) continue
      const h = saved.health
      if (target.health !== undefined && h && states.has(h.state) && Number.isInteger(h.streak) && h.streak >= 0) {
        target.health.state = h.state
        target.health.streak = Math.min(h.streak, Math.max(target.health.fall, target.health.rise) - 1)
      }
      const f = saved.failure
      if (f && Number.isFinite(f.ageMs) && typeof f.error === 'string') target.failure = { at: now - f.ageMs, error: f.error }
    }
    const active = this.targets.findIndex((t) => t.name === s.active)
    if (active >= 0) this.#active = active
  }

  /** Starts every target's checks on the shared scheduler; `onChange` hears each state change. */
  start(onChange: (change: TargetChange) => void): void {
    const hb = this.#heartbeat
    if (!hb) {
      if (this.#lookups === undefined) this.#watchNames()
      return
    }
    if (this.#checker || this.#follows) return
    const checker = createChecker(hb.check)
    this.#checker = checker
    for (const target of this.targets) {
      const stop = this.#scheduler.add({
        intervalMs: hb.interval * 1000,
        timeoutMs: hb.timeout * 1000,
        run: (signal) => checker.check(target, signal),
        report: (outcome) => this.#onOutcome(target, outcome, onChange),
      })
      this.#stops.push(stop)
    }
  }

  #onOutcome(target: Target, outcome: CheckOutcome, onChange: (change: TargetChange) => void): void {
    const health = target.health!
    if (!outcome.ok && outcome.reason === 'local') {
      // The proxy's own problem (see LOCAL_CHECK_ERRORS): not a result for the target.
      this.#logger.error({ target: target.name, state: health.state, ...outcome }, 'heartbeat check could not run: out of local resources (not counted against the target)')
      return
    }
    const change = health.record(outcome.ok)
    if (change) {
      onChange({ target, ...change, outcome })
      return
    }
    // A result that counts towards a change is worth a line; a steady state is not.
    const counting = health.streak > 0
    const needed = health.state === 'up' ? health.fall : health.rise
    this.#logger[counting ? 'info' : 'trace'](
      { target: target.name, state: health.state, ...outcome, count: counting ? `${health.streak}/${needed}` : undefined },
      outcome.ok ? 'check passed' : 'check failed',
    )
  }

  /** Stops the checks; a check in progress is abandoned and its connection closed. */
  async stop(): Promise<void> {
    clearInterval(this.#lookups)
    for (const stop of this.#stops) stop()
    this.#stops = []
    const checker = this.#checker
    this.#checker = undefined
    await checker?.close?.()
  }
}
