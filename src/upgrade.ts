// The upgrade (SIGUSR2): the running process starts a new ka-proxy from the same command line and
// entry point on disk (process.execPath, execArgv, argv: a newly installed release takes over),
// hands it the listening sockets, and exits once the new one serves. The listening sockets are
// never closed: the new process listens on the very descriptors (SCM_RIGHTS, native/ka_fdpass.c),
// so the listen backlog and its queued connections carry over and no client is refused.
//
// The protocol, over a Unix SOCK_SEQPACKET pair whose one end the new process inherits as
// descriptor 3 (KA_PROXY_HANDOVER_FD); every message is one JSON object with a format version `v`:
//   new -> old  {v, type: 'hello', pid, accepts: [versions]}     once its config is valid
//   old -> new  {v, type: 'listeners', pid, listeners, targets}  + one descriptor per listener
//               (targets: each route's target health, taken over so an upgrade never flaps one)
//   new -> old  {v, type: 'ready', pid, listeners}               once every route listens
// The old process picks the highest version both know; a new process that knows none of the
// old one's (or gets a message of a version it does not know) refuses, binds nothing and exits.
// Failure is safe: until 'ready' the old process changed nothing. If the new process exits, or
// does not report ready within READY_BOUND_MS, the old one logs why (with the new process's first
// error line, read from its stderr) and keeps serving; a later SIGUSR2 may try again. The new
// process's stderr is a pipe to the old one until it is ready, then the real stderr again (it
// inherits that as descriptor 4 and moves it onto 2).
//
// Established sessions do not move yet: while any session is open, SIGUSR2 is refused with one
// line and nothing else happens. Sessions accepted during an upgrade stay in the old process,
// which exits once they have ended (never cut).

import { spawn, type ChildProcess } from 'node:child_process'
import type { Logger } from 'pino'
import type { NativeAddon } from './native.ts'
import { KaError } from './errors.ts'

/** Versions of the hand-over format this release speaks (the highest is offered first). */
export const HANDOVER_VERSIONS: readonly number[] = [1]
export const HANDOVER_FD_ENV = 'KA_PROXY_HANDOVER_FD'
export const HANDOVER_STDERR_ENV = 'KA_PROXY_HANDOVER_STDERR'
/** How long the new process has to report ready, from its spawn. */
export const READY_BOUND_MS = 10_000
/** A new process that did not report ready gets this long to stop after SIGTERM, then SIGKILL. */
const KILL_AFTER_MS = 2000
const POLL_MS = 20
const MAX_MESSAGE = 256 * 1024
/** The new process waits this long for the old one's answer (within the old one's bound). */
const RECEIVE_BOUND_MS = READY_BOUND_MS

/** One listening socket handed over; `key` says which route (or the admin API) takes it. */
export interface HandedListener {
  key: string
  /** The address it listens on, as logged. */
  address: string
}

interface Hello {
  v: number
  type: 'hello'
  pid: number
  accepts: number[]
}

interface Listeners {
  v: number
  type: 'listeners'
  pid: number
  listeners: HandedListener[]
  /** Per route name: its targets' health, failed connects and the target in use (TargetPool.exportState). */
  targets?: Record<string, unknown>
}

interface Ready {
  v: number
  type: 'ready'
  pid: number
  listeners: number
}

type Message = Hello | Listeners | Ready

export class HandoverError extends KaError {
  constructor(message: string) {
    super('KA_ERR_HANDOVER', `upgrade hand-over: ${message}`)
  }
}

function encode(message: Message): Buffer {
  return Buffer.from(JSON.stringify(message))
}

function decode(payload: Buffer): Message {
  let message: unknown
  try {
    message = JSON.parse(payload.toString('utf8'))
  } catch {
    throw new HandoverError('a message that is not JSON')
  }
  const m = message as Partial<Message> | null
  if (m === null || typeof m !== 'object' || typeof m.v !== 'number' || typeof m.type !== 'string') throw new HandoverError('a message without a version and a type')
  return m as Message
}

/** The key under which a route's listener is handed over: its configured address, or (port 0) its name. */
export function routeListenerKey(name: string, host: string | undefined, port: number): string {
  return port === 0 ? `route ${name} ${host ?? '*'}:0` : `listen ${host ?? '*'}:${port}`
}

export function adminListenerKey(host: string | undefined, port: number): string {
  return `admin ${host ?? '*'}:${port}`
}

/** What the process being upgraded offers: its listening descriptors, and what it tells systemd. */
export interface UpgradeSource {
  /** The listening sockets to hand over (their descriptors stay open in this process). */
  listeners(): Array<HandedListener & { fd: number }>
  /** Per route name: what its target pool knows, so the new process neither flaps nor moves a target. */
  targetStates(): Record<string, unknown>
  sessionCount: number
}

export type UpgradeOutcome = { ok: true; pid: number; listeners: number; ms: number } | { ok: false; reason: string }

/**
 * The old process's side: one upgrade at a time. `start` resolves once the new process serves
 * (then this one stops accepting and exits when its own sessions end) or failed (nothing changed).
 */
export class Upgrader {
  readonly #native: NativeAddon
  readonly #logger: Logger
  #child: ChildProcess | undefined
  #running = false

  constructor(native: NativeAddon, logger: Logger) {
    this.#native = native
    this.#logger = logger
  }

  get running(): boolean {
    return this.#running
  }

  async start(source: UpgradeSource): Promise<UpgradeOutcome> {
    this.#running = true
    try {
      return await this.#run(source)
    } finally {
      this.#running = false
      this.#child = undefined
    }
  }

  /** Stops a new process that has not taken over (this process is stopping). */
  abort(): void {
    this.#child?.kill('SIGTERM')
  }

  async #run(source: UpgradeSource): Promise<UpgradeOutcome> {
    const started = performance.now()
    const deadline = started + READY_BOUND_MS
    const [mine, theirs] = this.#native.seqpacketPair()
    let child: ChildProcess
    try {
      child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
        stdio: ['inherit', 'inherit', 'pipe', theirs, 2],
        env: { ...process.env, [HANDOVER_FD_ENV]: '3', [HANDOVER_STDERR_ENV]: '4' },
      })
    } catch (err) {
      this.#native.closeFd(mine)
      return { ok: false, reason: `cannot start the new process: ${(err as Error).message}` }
    } finally {
      this.#native.closeFd(theirs)
    }
    this.#child = child
    const stderr = new FirstErrorLine()
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr.add(chunk)
      process.stderr.write(chunk)
    })
    let exited: string | undefined
    child.once('exit', (code, signal) => (exited = signal ? `was killed by ${signal}` : `exited with code ${code}`))
    child.once('error', (err) => (exited ??= `could not start (${err.message})`))
    const fail = (why: string): UpgradeOutcome => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS).unref()
      }
      const first = stderr.line()
      return { ok: false, reason: first === undefined ? why : `${why}: ${first}` }
    }
    try {
      const hello = await this.#receive(mine, deadline, () => exited)
      if (typeof hello === 'string') return fail(hello)
      if (hello.type !== 'hello' || !Array.isArray(hello.accepts)) return fail(`the new process sent '${hello.type}' where 'hello' was expected`)
      const version = HANDOVER_VERSIONS.find((v) => hello.accepts.includes(v))
      if (version === undefined) {
        return fail(`the new process speaks hand-over format ${hello.accepts.join(', ')}, this one ${HANDOVER_VERSIONS.join(', ')}: no common version`)
      }
      const listeners = source.listeners()
      const message: Listeners = { v: version, type: 'listeners', pid: process.pid, listeners: listeners.map(({ key, address }) => ({ key, address })), targets: source.targetStates() }
      this.#native.sendFds(mine, encode(message), listeners.map((l) => l.fd), Math.max(1, Math.ceil(deadline - performance.now())))
      const ready = await this.#receive(mine, deadline, () => exited)
      if (typeof ready === 'string') return fail(ready)
      if (ready.type !== 'ready') return fail(`the new process sent '${ready.type}' where 'ready' was expected`)
      // Its stderr is the real one again; this pipe has nothing more to carry.
      child.stderr!.destroy()
      child.unref()
      return { ok: true, pid: child.pid!, listeners: listeners.length, ms: Math.round(performance.now() - started) }
    } catch (err) {
      return fail((err as Error).message)
    } finally {
      this.#native.closeFd(mine)
    }
  }

  /** The next message, or why none came (the new process exited, closed, or the bound passed). */
  async #receive(sock: number, deadline: number, exited: () => string | undefined): Promise<Message | string> {
    for (;;) {
      let got: { payload: Buffer; fds: number[] } | null
      try {
        got = this.#native.recvFds(sock, MAX_MESSAGE, 0)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw err
        const why = exited()
        if (why !== undefined) return `the new process ${why} before it was ready`
        if (performance.now() >= deadline) return `the new process did not report ready within ${READY_BOUND_MS / 1000} s`
        await new Promise((r) => setTimeout(r, POLL_MS))
        continue
      }
      if (got === null) {
        // Closed: wait a moment for its exit status, which says more.
        await new Promise((r) => setTimeout(r, 200))
        return `the new process ${exited() ?? 'closed the hand-over socket'} before it was ready`
      }
      for (const fd of got.fds) this.#native.closeFd(fd)
      return decode(got.payload)
    }
  }
}

/** The first line of a process's stderr that says what went wrong. */
class FirstErrorLine {
  #text = ''

  add(chunk: Buffer): void {
    if (this.#text.length < 16_384) this.#text += chunk.toString('utf8')
  }

  /** A `ka-proxy: …` line or an `Error: …` line if there is one, else the first non-empty line. */
  line(): string | undefined {
    const lines = this.#text.split('\n').map((l) => l.trim()).filter((l) => l !== '')
    return lines.find((l) => l.startsWith('ka-proxy:') || /^\w*Error\b/.test(l)) ?? lines[0]
  }
}

/** Listening descriptors a new process received, taken by key; the rest are closed at the end. */
export class InheritedListeners {
  readonly from: number
  /** Per route name: its targets as the old process knew them (checked by TargetPool.importState). */
  readonly targets: Record<string, unknown>
  readonly #fds: Map<string, number>
  readonly #native: NativeAddon

  constructor(from: number, fds: Map<string, number>, targets: Record<string, unknown>, native: NativeAddon) {
    this.from = from
    this.#fds = fds
    this.targets = targets
    this.#native = native
  }

  take(key: string): number | undefined {
    const fd = this.#fds.get(key)
    this.#fds.delete(key)
    return fd
  }

  /** Closes what no route took (a route removed or moved by the new config). */
  closeRest(): string[] {
    const keys = [...this.#fds.keys()]
    for (const fd of this.#fds.values()) this.#native.closeFd(fd)
    this.#fds.clear()
    return keys
  }
}

/**
 * The new process's side, when it was started by an upgrade (KA_PROXY_HANDOVER_FD set); else
 * undefined. The variables are removed from the environment: a later upgrade sets its own.
 */
export class Handover {
  readonly #sock: number
  readonly #stderr: number | undefined
  readonly #native: NativeAddon
  #version = HANDOVER_VERSIONS[0]!

  private constructor(sock: number, stderr: number | undefined, native: NativeAddon) {
    this.#sock = sock
    this.#stderr = stderr
    this.#native = native
  }

  static fromEnv(native: NativeAddon | undefined): Handover | undefined {
    const raw = process.env[HANDOVER_FD_ENV]
    const rawStderr = process.env[HANDOVER_STDERR_ENV]
    delete process.env[HANDOVER_FD_ENV]
    delete process.env[HANDOVER_STDERR_ENV]
    if (raw === undefined || raw === '') return undefined
    const fd = Number(raw)
    if (!Number.isInteger(fd) || fd < 3) throw new HandoverError(`${HANDOVER_FD_ENV}=${raw} is not a descriptor`)
    if (native === undefined) throw new HandoverError('taking over needs the native helper (descriptor passing)')
    const stderr = rawStderr === undefined || rawStderr === '' ? undefined : Number(rawStderr)
    return new Handover(fd, stderr !== undefined && Number.isInteger(stderr) && stderr > 2 ? stderr : undefined, native)
  }

  /** Says hello and receives the listening sockets; throws HandoverError on a format it does not know. */
  receive(): InheritedListeners {
    this.#send({ v: this.#version, type: 'hello', pid: process.pid, accepts: [...HANDOVER_VERSIONS] })
    const got = this.#native.recvFds(this.#sock, MAX_MESSAGE, RECEIVE_BOUND_MS)
    if (got === null) throw new HandoverError('the old process closed the hand-over socket')
    const fds = new Map<string, number>()
    try {
      const message = decode(got.payload)
      if (!HANDOVER_VERSIONS.includes(message.v)) {
        throw new HandoverError(`format version ${message.v} is not known to this release (it knows ${HANDOVER_VERSIONS.join(', ')}); nothing was taken over`)
      }
      if (message.type !== 'listeners' || !Array.isArray(message.listeners) || message.listeners.length !== got.fds.length) {
        throw new HandoverError(`expected the listeners and one descriptor each, got '${message.type}' with ${got.fds.length} descriptors`)
      }
      this.#version = message.v
      message.listeners.forEach((l, i) => fds.set(String(l.key), got.fds[i]!))
      const targets = message.targets !== null && typeof message.targets === 'object' ? message.targets : {}
      return new InheritedListeners(message.pid, fds, targets, this.#native)
    } catch (err) {
      for (const fd of got.fds) this.#native.closeFd(fd)
      throw err
    }
  }

  /** Every route listens: tells the old process, and takes the real stderr back. */
  ready(listeners: number): void {
    if (this.#stderr !== undefined) this.#native.moveFd(this.#stderr, 2)
    this.#send({ v: this.#version, type: 'ready', pid: process.pid, listeners })
    this.#native.closeFd(this.#sock)
  }

  #send(message: Message): void {
    this.#native.sendFds(this.#sock, encode(message), [], RECEIVE_BOUND_MS)
  }
}
