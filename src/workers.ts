// --workers N: N event loops behind the same listening sockets, each with its own pump. The main
// thread is the first: it runs all that one loop runs (its routes, the admin API, the targets'
// checks, signals, the pid file, the upgrade) and starts N - 1 worker threads. Each is a ProxyApp
// of its own, without the admin API, that accepts on duplicates of the main thread's listening
// sockets: every loop's pump watches the same socket, and LoopBalance shares the clients out.
//
// One view of the process: the main thread's checks decide every target's health (a worker runs
// none: heartbeats are not multiplied) and each change reaches every worker, which applies it to
// its own sessions (on-down); /sessions and /metrics ask every worker and add theirs in; SIGHUP
// reloads every worker on the main thread's sockets; SIGTERM drains them all; failback moves all.
// A worker's log lines go through the main thread, which writes them with its own.
//
// Threads, not processes: the descriptors are the process's, so a worker needs no descriptor
// passing to accept on the main thread's sockets; there is one pid to signal, to write in the pid
// file and for systemd, and the native helper's state is per N-API environment (one pump per
// thread). A crash of the native code would take a process of workers down just the same; a worker
// that exits otherwise is replaced (its sessions end with it: its pump resets both legs of each).
//
// Routes of a pair stay on the main thread: a resumed link must reach the loop that holds its
// sessions.

import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import type { AppConfig, CliInput } from './config/resolve.ts'
import type { ConfigFile } from './config/schema.ts'
import type { FollowedChange } from './listener.ts'
import type { NativeAddon } from './native.ts'
import type { PoolState, TargetChange } from './targets.ts'
import type { HandedSession } from './upgrade.ts'
import { nextSessionIdValue, numberSessions } from './session.ts'

/** What a worker thread starts from: the same input the main thread resolved its config from. */
interface WorkerStart {
  index: number
  input: CliInput
  file: ConfigFile | undefined
  /** Per route listener key: a duplicate of the main thread's listening socket, the worker's to close. */
  listeners: Record<string, number>
  /** Per route: its targets as the main thread knows them. */
  targets: Record<string, PoolState>
  pretty: boolean
  /** Every loop's part in spreading the sessions (LoopBalance). */
  shared: SharedArrayBuffer
  /** Its sessions' ids: firstSession, firstSession + idStep, ... (see numberSessions). */
  firstSession: number
  idStep: number
}

type ToWorker =
  | { t: 'targets'; route: string; state: PoolState; change?: FollowedChange }
  | { t: 'reload'; id: number; input: CliInput; file: ConfigFile | undefined; listeners: Record<string, number>; targets: Record<string, PoolState> }
  | { t: 'ask'; id: number; what: 'sessions' | 'metrics' }
  | { t: 'failback'; route: string }
  | { t: 'stop'; graceMs: number }
  | { t: 'terminate' }
  | { t: 'handOver'; id: number }
  | { t: 'resume' }

type FromWorker =
  | { t: 'log'; text: string }
  | { t: 'started' }
  | { t: 'failed'; message: string }
  | { t: 'answer'; id: number; value: unknown }
  | { t: 'count'; sessions: number }
  | { t: 'stopped' }

/** How long a worker gets to start before the main thread gives up on it. */
const START_TIMEOUT_MS = 30_000
/** A worker says how many sessions it has at most this often (for the shutdown lines and notices). */
const COUNT_EVERY_MS = 250

/** This module's own file: a worker thread runs it (the same module, the other branch below). */
const ENTRY = fileURLToPath(import.meta.url)

/** Sessions a loop may be ahead of the least busy one before it lets the others take the clients. */
const BALANCE_SLACK = 1
/** While it lets others take the clients, a loop looks again at least this often (see LoopBalance). */
const BALANCE_RECHECK_MS = 50

// LoopBalance's shared cells: a lock, a wake-up counter, then per loop whether it accepts
// (ACCEPTS, STOPPED, or GONE: a worker that exited, a loop that drains) and how many sessions it has.
const LOCK = 0
const WAKE = 1
const FIRST = 2
const ACCEPTS = 1
const STOPPED = 0
const GONE = -1

/**
 * Least sessions across the event loops. Every loop's acceptor watches the same listening socket,
 * and any loop that is free takes a client: a busy loop takes fewer, but long-lived sessions
 * opened one at a time (a connection pool filling up) could all go to one loop. So each loop says
 * in shared memory how many sessions it has and whether it accepts, and one more than
 * BALANCE_SLACK ahead of the least busy stops accepting while a less busy loop accepts. Decisions
 * are taken under a lock, so a loop stops only while another accepts. A loop that stopped waits
 * on the wake-up counter, which a loop bumps when its sessions change while another has stopped,
 * and looks again then, or after BALANCE_RECHECK_MS at most (a worker that died: its cells are
 * cleared by the main thread).
 */
export class LoopBalance {
  readonly #cells: Int32Array
  readonly #index: number
  readonly #loops: number
  readonly #count: () => number
  readonly #apply: (paused: boolean) => void
  #paused = false
  #waiting = false
  #retrying = false
  #left = false

  /** `count`: this loop's sessions; `apply`: its acceptors stop (true) or go on (false). */
  constructor(shared: SharedArrayBuffer, index: number, count: () => number, apply: (paused: boolean) => void) {
    this.#cells = new Int32Array(shared)
    this.#loops = (this.#cells.length - FIRST) / 2
    this.#index = index
    this.#count = count
    this.#apply = apply
    Atomics.store(this.#cells, FIRST + index, ACCEPTS)
    this.changed()
  }

  static shared(loops: number): SharedArrayBuffer {
    return new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT * (FIRST + 2 * loops))
  }

  /** A loop gone (a worker that exited, a loop that drains): it neither accepts nor counts. */
  static forget(shared: SharedArrayBuffer, index: number): void {
    const cells = new Int32Array(shared)
    const loops = (cells.length - FIRST) / 2
    Atomics.store(cells, FIRST + index, GONE)
    Atomics.store(cells, FIRST + loops + index, 0)
    LoopBalance.#wake(cells)
  }

  static #wake(cells: Int32Array): void {
    Atomics.add(cells, WAKE, 1)
    Atomics.notify(cells, WAKE)
  }

  get paused(): boolean {
    return this.#paused
  }

  /** This loop's sessions changed (one opened or closed). */
  changed(): void {
    if (this.#left) return
    const cells = this.#cells
    Atomics.store(cells, FIRST + this.#loops + this.#index, this.#count())
    this.#decide()
    // A loop that stopped accepting and is no longer ahead is woken to take clients again; only
    // then (a wake-up costs the other thread a turn of its event loop).
    const sessions = FIRST + this.#loops
    const least = this.#least()
    for (let j = 0; j < this.#loops; j++) {
      if (j !== this.#index && Atomics.load(cells, FIRST + j) === STOPPED && Atomics.load(cells, sessions + j) <= least + BALANCE_SLACK) {
        LoopBalance.#wake(cells)
        break
      }
    }
  }

  /** The fewest sessions of the loops still here (this one included; gone ones count for nothing). */
  #least(): number {
    const cells = this.#cells
    const sessions = FIRST + this.#loops
    let least = Atomics.load(cells, sessions + this.#index)
    for (let j = 0; j < this.#loops; j++) {
      if (Atomics.load(cells, FIRST + j) !== GONE) least = Math.min(least, Atomics.load(cells, sessions + j))
    }
    return least
  }

  /** This loop stops (it drains): the others take every client. */
  leave(): void {
    this.#left = true
    LoopBalance.forget(this.#cells.buffer as SharedArrayBuffer, this.#index)
  }

  #decide(): void {
    if (this.#left) return
    const cells = this.#cells
    const woken = Atomics.load(cells, WAKE)
    if (Atomics.compareExchange(cells, LOCK, 0, 1) !== 0) {
      // Another loop is deciding, for a few microseconds: this one decides on its next turn.
      if (!this.#retrying) {
        this.#retrying = true
        setImmediate(() => {
          this.#retrying = false
          this.#decide()
        })
      }
      return
    }
    try {
      const sessions = FIRST + this.#loops
      const mine = Atomics.load(cells, sessions + this.#index)
      let lessBusyAccepts = false
      for (let j = 0; j < this.#loops; j++) {
        if (j !== this.#index && Atomics.load(cells, FIRST + j) === ACCEPTS && Atomics.load(cells, sessions + j) < mine) lessBusyAccepts = true
      }
      const pause = mine > this.#least() + BALANCE_SLACK && lessBusyAccepts
      if (pause !== this.#paused) {
        this.#paused = pause
        Atomics.store(cells, FIRST + this.#index, pause ? STOPPED : ACCEPTS)
        this.#apply(pause)
      }
    } finally {
      Atomics.store(cells, LOCK, 0)
    }
    if (this.#paused) this.#waitForChange(woken)
  }

  /** While stopped: decides again once another loop's sessions change, or after BALANCE_RECHECK_MS. */
  #waitForChange(seen: number): void {
    if (this.#waiting) return
    this.#waiting = true
    const again = (): void => {
      this.#waiting = false
      this.#decide()
    }
    const wait = Atomics.waitAsync(this.#cells, WAKE, seen, BALANCE_RECHECK_MS)
    if (wait.async) void wait.value.then(again)
    else setImmediate(again)
  }
}

/** One worker thread, as the main thread sees it. */
class WorkerThread {
  readonly index: number
  readonly worker: Worker
  sessions = 0
  stopped = false
  readonly #answers = new Map<number, (value: unknown) => void>()

  constructor(index: number, worker: Worker) {
    this.index = index
    this.worker = worker
  }

  post(message: ToWorker): void {
    this.worker.postMessage(message)
  }

  /** Asks and waits for the answer; undefined if the worker goes first. */
  ask<T>(message: ToWorker & { id: number }): Promise<T | undefined> {
    return new Promise((resolve) => {
      this.#answers.set(message.id, resolve as (value: unknown) => void)
      this.post(message)
    })
  }

  answered(id: number, value: unknown): void {
    this.#answers.get(id)?.(value)
    this.#answers.delete(id)
  }

  /** It exited: whoever waits for an answer gets none. */
  gone(): void {
    for (const resolve of this.#answers.values()) resolve(undefined)
    this.#answers.clear()
  }
}

/** The main thread's worker threads (the main thread itself is not one of them). */
export class WorkerGroup {
  readonly #threads: WorkerThread[] = []
  readonly #logger: Logger
  readonly #write: (text: string) => void
  readonly #native: NativeAddon
  readonly #pretty: boolean
  #input: CliInput
  #file: ConfigFile | undefined
  /** The main thread's listening sockets and targets, for a worker started now (or again). */
  #listening: () => { listeners: Map<string, number>; targets: Record<string, PoolState> }
  #nextId = 0
  #stopping = false
  #firstSession = 1
  #idStep = 1
  /** The loops' shared counts (LoopBalance): the main thread is loop 0. */
  shared = LoopBalance.shared(1)

  constructor(
    options: { input: CliInput; file: ConfigFile | undefined; logger: Logger; write: (text: string) => void; pretty: boolean; native: NativeAddon },
    listening: () => { listeners: Map<string, number>; targets: Record<string, PoolState> },
  ) {
    this.#input = options.input
    this.#file = options.file
    this.#logger = options.logger
    this.#write = options.write
    this.#pretty = options.pretty
    this.#native = options.native
    this.#listening = listening
  }

  /** How many worker threads run (the main thread not counted). */
  get size(): number {
    return this.#threads.length
  }

  /** Starts `count` worker threads; rejects (and stops those started) if one cannot start. */
  async start(count: number): Promise<void> {
    // The main thread's next id and every loop's, N apart (a worker started again goes on from
    // its slot's first id: a few ids may be given twice then, in a process's life).
    this.#firstSession = nextSessionIdValue()
    this.#idStep = count + 1
    numberSessions(this.#firstSession, this.#idStep)
    this.shared = LoopBalance.shared(count + 1)
    // Started side by side: each spends most of its start loading modules.
    const starts = await Promise.allSettled(Array.from({ length: count }, (_, i) => this.#spawn(i + 1)))
    for (const s of starts) if (s.status === 'fulfilled') this.#threads.push(s.value)
    const failed = starts.find((s) => s.status === 'rejected')
    if (failed !== undefined) {
      await this.stop(0)
      throw failed.reason
    }
  }

  /** Duplicates of the main thread's listening sockets: each worker closes its own. */
  #duplicates(listeners: Map<string, number>): Record<string, number> {
    return Object.fromEntries([...listeners].map(([key, fd]) => [key, this.#native.dupFd(fd)]))
  }

  #closeAll(fds: Record<string, number>): void {
    for (const fd of Object.values(fds)) this.#native.closeFd(fd)
  }

  async #spawn(index: number): Promise<WorkerThread> {
    const { listeners, targets } = this.#listening()
    const dups = this.#duplicates(listeners)
    const start: WorkerStart = { index, input: this.#input, file: this.#file, listeners: dups, targets, pretty: this.#pretty, firstSession: this.#firstSession + index, idStep: this.#idStep, shared: this.shared }
    let worker: Worker
    try {
      // The same Node flags as this thread (a loader such as tsx, when running from source).
      worker = new Worker(ENTRY, { workerData: start, execArgv: process.execArgv, stdout: false, stderr: false })
    } catch (err) {
      this.#closeAll(dups)
      throw err
    }
    const thread = new WorkerThread(index, worker)
    worker.on('message', (m: FromWorker) => this.#onMessage(thread, m))
    // An exception nothing in the worker caught: it exits next (#onExit replaces it).
    worker.on('error', (err) => this.#logger.error({ worker: index, err }, 'worker failed'))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`worker ${index} did not start within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS)
      const fail = (err: Error): void => {
        clearTimeout(timer)
        worker.off('message', onStart)
        void worker.terminate()
        reject(err)
      }
      const onStart = (m: FromWorker): void => {
        if (m.t === 'started') {
          clearTimeout(timer)
          worker.off('message', onStart)
          worker.off('exit', onEarlyExit)
          worker.on('exit', (code) => this.#onExit(thread, code))
          resolve()
        } else if (m.t === 'failed') fail(new Error(`worker ${index}: ${m.message}`))
      }
      // The worker closes the duplicates it took; it cannot have taken them if it never ran.
      const onEarlyExit = (code: number): void => fail(new Error(`worker ${index} exited (code ${code}) before it started`))
      worker.on('message', onStart)
      worker.once('exit', onEarlyExit)
      worker.once('error', (err) => fail(err))
    })
    return thread
  }

  #onMessage(thread: WorkerThread, m: FromWorker): void {
    switch (m.t) {
      case 'log':
        this.#write(m.text)
        break
      case 'answer':
        thread.answered(m.id, m.value)
        break
      case 'count':
        thread.sessions = m.sessions
        break
      case 'stopped':
        thread.stopped = true
        break
      default:
    }
  }

  /** A worker exited: when nobody asked it to, it is replaced, once a second at most. */
  #onExit(thread: WorkerThread, code: number): void {
    thread.gone()
    LoopBalance.forget(this.shared, thread.index)
    const i = this.#threads.indexOf(thread)
    if (this.#stopping || thread.stopped || i < 0) return
    this.#logger.error({ worker: thread.index, code, sessions: thread.sessions }, 'worker exited unexpectedly: its sessions ended with it; starting a new one')
    this.#threads.splice(i, 1)
    const replace = (): void => {
      if (this.#stopping) return
      this.#spawn(thread.index).then(
        (t) => {
          if (this.#stopping) void t.worker.terminate()
          else this.#threads.push(t)
          this.#logger.info({ worker: thread.index }, 'worker started again')
        },
        (err: unknown) => {
          this.#logger.error({ worker: thread.index, error: (err as Error).message }, 'worker cannot start again; retrying in a second')
          setTimeout(replace, 1000).unref()
        },
      )
    }
    setTimeout(replace, 0).unref()
  }

  /** Their sessions, as they last said (at most COUNT_EVERY_MS old). */
  get sessionCount(): number {
    let n = 0
    for (const t of this.#threads) n += t.sessions
    return n
  }

  /** The main thread's checks changed a target: every worker takes its view and applies the change. */
  targetChanged(route: string, state: PoolState, change: TargetChange): void {
    const followed: FollowedChange = { target: change.target.name, from: change.from, to: change.to, outcome: change.outcome }
    for (const t of this.#threads) t.post({ t: 'targets', route, state, change: followed })
  }

  failback(route: string): void {
    for (const t of this.#threads) t.post({ t: 'failback', route })
  }

  /** Every worker's sessions as /sessions shows them (JSON, one string each). */
  async sessions(): Promise<string[]> {
    const answers = await Promise.all(this.#threads.map((t) => t.ask<string[]>({ t: 'ask', id: this.#nextId++, what: 'sessions' })))
    return answers.flatMap((rows) => rows ?? [])
  }

  /** Every worker's metrics (prom-client JSON), for the main thread to add in. */
  async metrics(): Promise<unknown[]> {
    const answers = await Promise.all(this.#threads.map((t) => t.ask<unknown>({ t: 'ask', id: this.#nextId++, what: 'metrics' })))
    return answers.filter((m) => m !== undefined)
  }

  /**
   * After the main thread reloaded: each worker reloads the same config on the main thread's
   * sockets. Resolves with what each worker said (its error, if its reload was rejected).
   */
  async reload(input: CliInput, file: ConfigFile | undefined): Promise<Array<{ worker: number; error?: string }>> {
    this.#input = input
    this.#file = file
    return Promise.all(this.#threads.map(async (t) => {
      const { listeners, targets } = this.#listening()
      const dups = this.#duplicates(listeners)
      const answer = await t.ask<{ error?: string; unused: string[] }>({ t: 'reload', id: this.#nextId++, input, file, listeners: dups, targets: targets })
      return { worker: t.index, ...(answer?.error !== undefined && { error: answer.error }) }
    }))
  }

  /**
   * The upgrade (SIGUSR2), first step: every worker stops accepting and hands the sessions that
   * can move to the main thread, which carries them on (ProxyApp.gatherFromWorkers) and hands
   * them over with its own. The others (connecting, ending) finish in their worker.
   */
  async handOver(): Promise<Array<HandedSession & { fds: number[] }>> {
    const answers = await Promise.all(this.#threads.map((t) => t.ask<Array<HandedSession & { fds: number[] }>>({ t: 'handOver', id: this.#nextId++ })))
    const out = answers.flatMap((sessions) => sessions ?? [])
    // Buffers arrive as Uint8Arrays (structured clone): the pump takes Buffers.
    for (const s of out) {
      for (const leg of Object.values(s.state.legs)) leg.queued = Buffer.from(leg.queued.buffer, leg.queued.byteOffset, leg.queued.byteLength)
    }
    return out
  }

  /** A failed upgrade: every worker accepts again (the sessions it handed over stay on the main thread). */
  resumeAccepting(): void {
    for (const t of this.#threads) t.post({ t: 'resume' })
  }

  /** Every worker stops accepting, lets its sessions finish for `graceMs`, then exits. */
  async stop(graceMs: number): Promise<void> {
    this.#stopping = true
    await Promise.all(this.#threads.map(async (t) => {
      const exited = new Promise((resolve) => t.worker.once('exit', resolve))
      t.post({ t: 'stop', graceMs })
      await exited
    }))
    this.#threads.length = 0
  }

  /** Second signal: every worker closes its sessions at once. */
  terminate(): void {
    for (const t of this.#threads) t.post({ t: 'terminate' })
  }
}

/** The config a worker runs: the routes that are not a pair's; the admin API and pid file are the main thread's. */
export function workerConfig(config: AppConfig): AppConfig {
  return { ...config, admin: undefined, pidFile: undefined, routes: config.routes.filter((r) => r.pair === undefined) }
}

/** A worker's log lines, sent to the main thread a loop turn's worth at a time (or at once: flush). */
function logSink(post: (m: FromWorker) => void): Writable & { flush(): void } {
  let pending = ''
  let scheduled = false
  const flush = (): void => {
    scheduled = false
    if (pending === '') return
    post({ t: 'log', text: pending })
    pending = ''
  }
  const stream = new Writable({
    decodeStrings: false,
    write(chunk: string | Buffer, _encoding, done) {
      pending += typeof chunk === 'string' ? chunk : chunk.toString()
      if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
      done()
    },
    final(done) {
      flush()
      done()
    },
  })
  return Object.assign(stream, { flush })
}

/** A worker thread: its own ProxyApp on the main thread's listening sockets, until told to stop. */
async function runWorker(start: WorkerStart): Promise<void> {
  const port = parentPort!
  const post = (m: FromWorker): void => port.postMessage(m)
  // Loaded here, not at the top: the main thread imports this module for WorkerGroup alone.
  const [{ resolveAppConfig }, { createLogger }, { SocketControl }, { ProxyApp }, { chooseRelay }, { InheritedListeners }, { loadNative }, { sessionReport }] = await Promise.all([
    import('./config/resolve.ts'),
    import('./log.ts'),
    import('./socket-control.ts'),
    import('./app.ts'),
    import('./transport/registry.ts'),
    import('./upgrade.ts'),
    import('./native.ts'),
    import('./admin/server.ts'),
  ])
  const load = loadNative()
  const native = load.ok ? load.binding : undefined
  const listening = (fds: Record<string, number>, targets: Record<string, PoolState>) => new InheritedListeners(0, new Map(Object.entries(fds)), targets, [], native!)
  const sink = logSink(post)
  let config: AppConfig
  let inherited = listening(start.listeners, start.targets)
  try {
    config = workerConfig(resolveAppConfig(start.input, start.file))
  } catch (err) {
    inherited.closeRest()
    post({ t: 'failed', message: (err as Error).message })
    return
  }
  numberSessions(start.firstSession, start.idStep)
  const { logger: base } = await createLogger(config.log, { stream: sink, pretty: start.pretty })
  const logger = base.child({ worker: start.index })
  const sockets = new SocketControl({ native: start.input.native })
  const app = new ProxyApp(sockets, logger, chooseRelay(sockets, process.env.KA_PROXY_RELAY), { follower: true })
  try {
    await app.start(config, inherited)
  } catch (err) {
    post({ t: 'failed', message: (err as Error).message })
    return
  } finally {
    inherited.closeRest()
  }
  app.balanceLoops(start.shared, start.index)
  // Its lines so far (listening) before the main thread's line that says the workers started.
  sink.flush()
  post({ t: 'started' })
  let said = -1
  const counter = setInterval(() => {
    const n = app.sessionCount
    if (n !== said) post({ t: 'count', sessions: (said = n) })
  }, COUNT_EVERY_MS)
  let reloading = Promise.resolve()
  port.on('message', (m: ToWorker) => {
    switch (m.t) {
      case 'targets':
        app.followTargets(m.route, m.state, m.change)
        break
      case 'failback':
        app.failback(m.route)
        break
      case 'ask': {
        if (m.what === 'metrics') {
          void app.metrics.registry.getMetricsAsJSON().then((value) => post({ t: 'answer', id: m.id, value }))
        } else {
          const now = performance.now()
          const rows: string[] = []
          for (const { route, session } of app.sessions()) rows.push(JSON.stringify({ ...sessionReport(route, session, sockets, now), worker: start.index }))
          post({ t: 'answer', id: m.id, value: rows })
        }
        break
      }
      case 'reload':
        reloading = reloading.then(async () => {
          inherited = listening(m.listeners, m.targets)
          let error: string | undefined
          try {
            const next = workerConfig(resolveAppConfig(m.input, m.file))
            await app.reload(next, inherited)
            for (const [route, state] of Object.entries(m.targets)) app.followTargets(route, state)
            logger.level = next.log.level
          } catch (err) {
            error = (err as Error).message
            logger.error({ error }, 'config reload rejected on this worker: keeping its running config')
          }
          post({ t: 'answer', id: m.id, value: { error, unused: inherited.closeRest() } })
        })
        break
      case 'stop':
        clearInterval(counter)
        void reloading.then(() => app.stop(m.graceMs)).then(() => {
          post({ t: 'stopped' })
          sink.end(() => port.close())
        })
        break
      case 'terminate':
        app.terminate()
        break
      case 'handOver': {
        app.holdAccepting(true)
        const moved = app.handOverSessions(undefined)
        post({ t: 'answer', id: m.id, value: moved.map((s) => ({ route: s.route, identity: s.identity, target: s.target, state: s.transport.state, fds: s.transport.fds })) })
        break
      }
      case 'resume':
        app.holdAccepting(false)
        break
      default:
    }
  })
}

if (!isMainThread && (workerData as Partial<WorkerStart> | null)?.input !== undefined) {
  void runWorker(workerData as WorkerStart)
}
