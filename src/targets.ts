// The targets of a listener, in the order given, and which one a new connection goes to.
// With heartbeats, each target's checks drive its health; without, every target is used.
// What the listener does to sessions when a target changes state is in listener.ts.

import type { Logger } from 'pino'
import { formatEndpoint, type Endpoint } from './config/endpoint.ts'
import type { HeartbeatSettings } from './config/heartbeat.ts'
import type { Balance } from './config/options.ts'
import type { Checker } from './heartbeat/checker.ts'
import { TargetHealth, type HealthChange } from './heartbeat/health.ts'
import { createChecker } from './heartbeat/registry.ts'
import { sharedScheduler, type CheckOutcome, type HeartbeatScheduler } from './heartbeat/scheduler.ts'

export class Target {
  readonly host: string
  readonly port: number
  /** host:port as logged. */
  readonly name: string
  readonly health: TargetHealth | undefined

  constructor(endpoint: Endpoint & { host: string }, heartbeat: HeartbeatSettings | undefined) {
    this.host = endpoint.host
    this.port = endpoint.port
    this.name = formatEndpoint(endpoint.host, endpoint.port)
    this.health = heartbeat ? new TargetHealth(heartbeat.fall, heartbeat.rise) : undefined
  }
}

export interface TargetChange extends HealthChange {
  target: Target
  /** The check that caused the change. */
  outcome: CheckOutcome
}

export class TargetPool {
  readonly targets: readonly Target[]
  readonly #balance: Balance
  readonly #heartbeat: HeartbeatSettings | undefined
  readonly #scheduler: HeartbeatScheduler
  readonly #logger: Logger
  #checker: Checker | undefined
  #stops: Array<() => void> = []
  #next = 0

  constructor(
    endpoints: ReadonlyArray<Endpoint & { host: string }>,
    options: { balance: Balance; heartbeat: HeartbeatSettings | undefined; logger: Logger; scheduler?: HeartbeatScheduler },
  ) {
    this.#heartbeat = options.heartbeat
    this.targets = endpoints.map((e) => new Target(e, options.heartbeat))
    this.#balance = options.balance
    this.#logger = options.logger
    this.#scheduler = options.scheduler ?? sharedScheduler
  }

  /** Down targets get no new sessions, except with on-down keep, where checks only log. */
  routable(target: Target): boolean {
    return target.health === undefined || target.health.state !== 'down' || this.#heartbeat?.onDown === 'keep'
  }

  /** The target for a new connection, or undefined when none is healthy. */
  pick(): Target | undefined {
    const n = this.targets.length
    if (this.#balance === 'first') return this.targets.find((t) => this.routable(t))
    for (let i = 0; i < n; i++) {
      const index = (this.#next + i) % n
      const target = this.targets[index]!
      if (this.routable(target)) {
        this.#next = (index + 1) % n
        return target
      }
    }
    return undefined
  }

  /** Starts every target's checks on the shared scheduler; `onChange` hears each state change. */
  start(onChange: (change: TargetChange) => void): void {
    const hb = this.#heartbeat
    if (!hb || this.#checker) return
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
    for (const stop of this.#stops) stop()
    this.#stops = []
    const checker = this.#checker
    this.#checker = undefined
    await checker?.close?.()
  }
}
