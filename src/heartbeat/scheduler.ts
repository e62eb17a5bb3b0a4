// One timer for every heartbeat check of the process. It starts checks when they are due
// and fails those that outlive their timeout; the check itself is I/O on its own socket,
// so the relay never waits for one.
//
// Checks of one target start at a fixed rate (due times do not drift by a check's
// duration) and never overlap. With timeout <= interval, a target that stops answering
// right after a good check is known after at most interval × fall + timeout.

import { CheckFailed } from '../errors.ts'

export interface CheckOutcome {
  ok: boolean
  /** Why the check failed (a CheckFailed reason: timeout, refused, bad_reply...). */
  reason?: string
  detail?: string
  latencyMs: number
}

export interface CheckJob {
  intervalMs: number
  timeoutMs: number
  run(signal: AbortSignal): Promise<void>
  report(outcome: CheckOutcome): void
}

interface Running {
  controller: AbortController
  startedAt: number
  deadline: number
}

interface Entry {
  job: CheckJob
  nextAt: number
  running: Running | undefined
}

/** Timers fire on the loop's millisecond clock; this much early still counts as due. */
const SLACK_MS = 1

export class HeartbeatScheduler {
  readonly #entries = new Set<Entry>()
  #timer: NodeJS.Timeout | undefined
  #timerAt = Infinity

  /** Runs the first check now, then one per interval; returns the function that stops it. */
  add(job: CheckJob): () => void {
    const entry: Entry = { job, nextAt: performance.now(), running: undefined }
    this.#entries.add(entry)
    this.tick()
    return () => {
      this.#entries.delete(entry)
      entry.running?.controller.abort()
      entry.running = undefined
      this.#arm()
    }
  }

  get size(): number {
    return this.#entries.size
  }

  /** Times out overdue checks, starts due ones, sets the timer for the next event. */
  tick(): void {
    const now = performance.now()
    for (const entry of this.#entries) {
      const r = entry.running
      if (r && now >= r.deadline - SLACK_MS) {
        const seconds = entry.job.timeoutMs / 1000
        this.#settle(entry, r, new CheckFailed('timeout', `no answer within ${seconds} s`))
      }
      if (!entry.running && now >= entry.nextAt - SLACK_MS) this.#start(entry, now)
    }
    this.#arm()
  }

  #start(entry: Entry, now: number): void {
    const { job } = entry
    const running: Running = { controller: new AbortController(), startedAt: now, deadline: now + job.timeoutMs }
    entry.running = running
    // Fixed rate; a due time missed (the loop was busy) is skipped, not made up for.
    do entry.nextAt += job.intervalMs
    while (entry.nextAt <= now)
    let check: Promise<void>
    try {
      check = job.run(running.controller.signal)
    } catch (err) {
      check = Promise.reject(err)
    }
    check.then(
      () => this.#settle(entry, running, undefined),
      (err: unknown) => this.#settle(entry, running, err),
    )
  }

  /** The first of result and timeout counts; the later one finds the check gone. */
  #settle(entry: Entry, running: Running, err: unknown): void {
    if (entry.running !== running) return
    entry.running = undefined
    // Closes the check's connection when the timeout came first.
    running.controller.abort()
    const latencyMs = Math.round((performance.now() - running.startedAt) * 10) / 10
    if (err === undefined) {
      entry.job.report({ ok: true, latencyMs })
      return
    }
    const failure = err instanceof CheckFailed ? err : new CheckFailed('error', (err as Error)?.message ?? String(err), err)
    entry.job.report({ ok: false, reason: failure.reason, detail: failure.message, latencyMs })
  }

  #arm(): void {
    let at = Infinity
    for (const e of this.#entries) at = Math.min(at, e.running ? e.running.deadline : e.nextAt)
    if (at === this.#timerAt) return
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#timerAt = at
    if (at === Infinity) return
    this.#timer = setTimeout(schedulerOnTimer, Math.max(0, at - performance.now()), this).unref()
  }

  /** Called by the timer: it has fired, so a new one is needed whatever the next time is. */
  onTimer(): void {
    this.#timer = undefined
    this.#timerAt = Infinity
    this.tick()
  }
}

function schedulerOnTimer(scheduler: HeartbeatScheduler): void {
  scheduler.onTimer()
}

/** The process's scheduler: every listener's checks share its one timer. */
export const sharedScheduler = new HeartbeatScheduler()
