// What the probe needs from a protocol: open a connection (and do its opening exchange, if
// it has one), let it sit, then prove it alive with one exchange. One file per protocol
// (echo, redis, send, pg), registered in checks.ts. Raw-socket protocols reuse the heartbeat
// checkers' request/judge pairs through ProbeLink below; pg logs in with the `pg` library.

import net, { type Socket } from 'node:net'
import { KaError } from '../errors.ts'
import { failureOf, type Exchange } from '../heartbeat/checker.ts'
import { formatEndpoint } from '../config/endpoint.ts'
import { noDelay } from '../socket-control.ts'

/** How a connection was found dead: no answer, a reset, or a close (FIN). */
export type How = 'silent' | 'reset' | 'closed'

export interface ProbeTarget {
  host: string
  port: number
}

/**
 * A connection found dead. `byServer`: the server itself ended it (it said so in its protocol
 * before closing, or the check knows the server closes connections in this state), so it
 * says nothing about the path.
 */
export class Death extends Error {
  readonly how: How
  readonly byServer: boolean

  constructor(how: How, detail: string, byServer = false) {
    super(detail)
    this.how = how
    this.byServer = byServer
  }
}

/** The target cannot be reached, or does not answer the check, before anything is measured. */
export class TargetUnreachable extends KaError {
  constructor(target: ProbeTarget, detail: string) {
    super('KA_ERR_UNREACHABLE', `--target: ${formatEndpoint(target.host, target.port)}: ${detail}`, 3)
  }
}

export interface ProbeConnection {
  /**
   * Resolves when the connection is open and its opening exchange done (the idle time starts
   * then); rejects with a Death (or TargetUnreachable-worthy error) otherwise.
   */
  readonly ready: Promise<void>
  /** Settles with the Death once the connection ends by itself; never rejects. */
  readonly ended: Promise<Death>
  /** One exchange of the protocol: resolves when answered, rejects with a Death. */
  prove(timeoutMs: number): Promise<void>
  /** The TCP socket, for keepalive options; undefined before it exists. */
  socket(): Socket | undefined
  /** Closes it: politely when alive, with a reset when found silently dead (frees the kernel's state at once). */
  close(dead: boolean): void
}

export interface ProbeCheck {
  /** As given to --check. */
  readonly name: string
  /** One line for the report: what is exchanged. */
  readonly describe: string
  /** Set when the server itself closes idle connections in the state this check leaves them in. */
  readonly serverLimit?: string
  /**
   * The idle limit the server declares for itself, in seconds (Redis `timeout`), asked once at
   * the start: a close at or after it is the server's. undefined: none, or it cannot be asked.
   */
  serverIdleLimit?(target: ProbeTarget, timeoutMs: number): Promise<number | undefined>
  open(target: ProbeTarget, connectTimeoutMs: number): ProbeConnection
}

/** Errors that mean no answer came back (not a reset by anyone). */
const SILENT_ERRORS = new Set(['ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN'])

/** A socket error as a Death: a reset, or silence when the kernel gave up on an unanswered peer. */
export function deathOf(err: NodeJS.ErrnoException, byServer = false): Death {
  const code = err.code ?? err.name
  if (SILENT_ERRORS.has(code)) return new Death('silent', code)
  return new Death('reset', failureOf(err).message, byServer)
}

export interface LinkSpec {
  /** Exchanged once connected, before the idle time; none: the connect alone. */
  opening?: Exchange
  /** Exchanged after the idle time to prove the connection alive. */
  proof: Exchange
  /** The server closes idle connections in this state by itself (PostgreSQL before a login). */
  serverCloses?: boolean
}

interface Pending {
  ex: Exchange
  resolve(): void
  reject(d: Death): void
  timer?: NodeJS.Timeout
}

/**
 * One raw TCP connection of a request/judge protocol. Bytes that arrive while it sits idle
 * are kept: a server that says something before closing (an error, a goodbye) made the close
 * itself; boxes on the path do not invent application bytes.
 */
export class ProbeLink implements ProbeConnection {
  readonly ready: Promise<void>
  readonly ended: Promise<Death>
  readonly #socket: Socket
  readonly #spec: LinkSpec
  #reply: Buffer = Buffer.alloc(0)
  #pending: Pending | undefined
  #unsolicited = 0
  #dead: Death | undefined
  #onEnd!: (d: Death) => void

  constructor(target: ProbeTarget, spec: LinkSpec, connectTimeoutMs: number) {
    this.#spec = spec
    this.ended = new Promise((resolve) => (this.#onEnd = resolve))
    const socket = net.connect({ host: target.host, port: target.port })
    noDelay(socket)
    this.#socket = socket
    socket.on('data', (chunk: Buffer) => this.#onData(chunk))
    socket.once('end', () => this.#die(new Death('closed', this.#closeDetail('FIN'), this.#byServer())))
    // Stays attached after close: a late error on the destroyed socket must not throw.
    socket.on('error', (err: NodeJS.ErrnoException) => this.#die(deathOf(err, this.#byServer())))
    this.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Death('silent', `no connection within ${connectTimeoutMs / 1000} s`))
        socket.destroy()
      }, connectTimeoutMs)
      socket.once('connect', () => {
        clearTimeout(timer)
        if (!spec.opening) resolve()
        else this.#exchange(spec.opening, connectTimeoutMs).then(resolve, reject)
      })
      void this.ended.then((d) => {
        clearTimeout(timer)
        reject(d)
      })
    })
    this.ready.catch(() => {})
  }

  prove(timeoutMs: number): Promise<void> {
    return this.#exchange(this.#spec.proof, timeoutMs)
  }

  socket(): Socket {
    return this.#socket
  }

  close(dead: boolean): void {
    if (this.#socket.destroyed) return
    // A reset only where the peer has not ended the connection itself: after its FIN or RST
    // there is nothing left to free, and Node 20 spins on a reset with a shutdown pending.
    if (dead && !this.#dead) this.#socket.resetAndDestroy()
    else this.#socket.destroy()
  }

  #exchange(ex: Exchange, timeoutMs: number): Promise<void> {
    if (this.#dead) return Promise.reject(this.#dead)
    return new Promise((resolve, reject) => {
      this.#reply = Buffer.alloc(0)
      const pending: Pending = { ex, resolve, reject }
      pending.timer = setTimeout(() => this.#settle(new Death('silent', `no answer within ${timeoutMs / 1000} s`)), timeoutMs)
      this.#pending = pending
      if (ex.request && ex.request.length > 0) this.#socket.write(ex.request)
      else if (!ex.judge) this.#settle(undefined)
    })
  }

  #onData(chunk: Buffer): void {
    const pending = this.#pending
    if (!pending?.ex.judge) {
      this.#unsolicited += chunk.length
      return
    }
    this.#reply = this.#reply.length === 0 ? chunk : Buffer.concat([this.#reply, chunk])
    const verdict = pending.ex.judge(this.#reply)
    if (verdict === 'up') this.#settle(undefined)
    else if (verdict !== 'more') this.#settle(new Death('closed', `bad reply: ${verdict.bad}`, true))
  }

  #settle(failure: Death | undefined): void {
    const pending = this.#pending
    if (!pending) return
    this.#pending = undefined
    clearTimeout(pending.timer)
    if (failure) pending.reject(failure)
    else pending.resolve()
  }

  #byServer(): boolean {
    return this.#unsolicited > 0 || this.#spec.serverCloses === true
  }

  #closeDetail(what: string): string {
    return this.#unsolicited > 0 ? `${what} after ${this.#unsolicited} unsolicited bytes from the server` : `${what} from the peer`
  }

  #die(death: Death): void {
    if (this.#dead) return
    this.#dead = death
    this.#settle(death)
    this.#onEnd(death)
  }
}
