// The upgrade (SIGUSR2): the running process starts a new ka-proxy from the same command line and
// entry point on disk (process.execPath, execArgv, argv: a newly installed release takes over;
// Node's one-shot flags such as --inspect are left out, see upgradeExecArgv), hands it the
// listening sockets, and exits once the new one serves. The listening sockets are
// never closed: the new process listens on the very descriptors (SCM_RIGHTS, native/ka_fdpass.c),
// so the listen backlog and its queued connections carry over and no client is refused.
//
// The protocol, over a Unix SOCK_SEQPACKET pair whose one end the new process inherits as
// descriptor 3 (KA_PROXY_HANDOVER_FD); every message is one JSON object with a format version `v`:
//   new -> old  {v, type: 'hello', pid, accepts: [versions]}     once its config is valid
//   old -> new  {v, type: 'listeners', pid, listeners, targets}  + one descriptor per listener
//               (targets: each route's target health, taken over so an upgrade never flaps one;
//               v4 `removed`: the settings of routes the new config lacks, whose sessions follow)
//   old -> new  {v, type: 'held', id, leg, data}                 v2: a large held queue, in parts
//   old -> new  {v, type: 'sessions', sessions}                  v2: + two descriptors per session
//   new -> old  {v, type: 'ready', pid, listeners, refused}      once every route listens
//   old -> new  {v, type: 'go'}                                  v3: the sessions are the new one's
// From v5 the sessions move after the commit, a message at a time, instead of before 'ready':
//   new -> old  {v, type: 'ready', pid, listeners}               routes built; handed-over listeners not yet accepting
//               (v5 adds `keepalive`: per route, the settings its sessions' sockets have)
//   old -> new  {v, type: 'go', nextSession}                     the listeners are the new one's; this one stops accepting
//   old -> new  {v, type: 'held' | 'sessions', ...}              as in v2, at most WINDOW messages unanswered
//   new -> old  {v, type: 'took', refused, free}                 one per `sessions` message: they relay there now
//   old -> new  {v, type: 'done', sessions}                      nothing more moves
// v6 adds paired sessions: a `sessions` entry may carry `pair` (its channel: token, id, offsets,
// FIN flags, resumes, lostMs) and travels with one descriptor, its plain leg's; and a far end's
// pair address is handed over as its route's listener.
// The old process picks the highest version both know; a new process that knows none of the
// old one's (or gets a message of a version it does not know) refuses, binds nothing and exits.
// Failure is safe: until 'go' (v2: 'ready') the old process changed nothing. If the new process exits, or
// does not report ready within READY_BOUND_MS, the old one logs why (with the new process's first
// error line, read from its stderr) and keeps serving; a later SIGUSR2 may try again. The new
// process's stderr is a pipe to the old one until it is ready, then the real stderr again (it
// inherits that as descriptor 4 and moves it onto 2).
//
// Established sessions move too (v2): after the listeners, `held` and `sessions` messages carry
// each session that can move (Session.handOver: target connected, not ending) with its two
// sockets and what its pump held; the new process builds them at once but relays only after
// 'ready', so until then the old process can take every one back (a failed upgrade loses
// nothing), and 'ready' names the ones it could not take (kept by the old process).
// Who owns the sessions is decided at one point, in the old process, when it reads 'ready' (v3):
// within READY_BOUND_MS and not stopped by a signal meanwhile, it sends 'go' and they are the new
// process's; else it kills the new process, which has moved no byte (it waits for 'go', and gives
// up by itself GO_BOUND_MS after its 'ready'), and carries them on. A 'ready' sent in time but read
// late (the old process stalled) is refused: never both, never neither. In v2 the new process
// relayed at once after 'ready', so a signal or the deadline falling between the two could leave
// both relaying. Sessions still connecting, ending, on the stream transport (Node's buffers hold
// bytes no descriptor carries), or accepted during an upgrade stay in the old process, which exits
// once they have ended (never cut). A route the new config lacks: up to v3 its sessions stay in
// the old process too; from v4 they move with the route's settings as its config would write them
// (config/options.ts rawOptionsOf: the form every release reads), and the new process drains them
// as a reload drains a removed route (app.ts), so the old process exits at once.
//
// Batches (v5): up to v4 every session paused from the old process's hello to the new one's
// 'ready', the whole hand-over long (about 0.3 ms a session: a second and more at thousands). From
// v5 nothing moves before the commit; after 'go' the old process takes SESSIONS_PER_MESSAGE
// sessions at a time off its routes, sends them, and the new process starts them as they arrive
// and answers 'took': a session pauses only for its own message's trip, and the old process
// relays the others meanwhile. The new process accepts on the handed-over listeners only after
// 'go' (clients wait in the backlog), so a failed attempt never resets a client it accepted. If
// 'ready' and each 'took' say how many descriptors the new process has free: a message's
// descriptors are installed all at once when it is read, and a message the kernel must truncate
// would lose sessions, so a message is never larger than that room allows, and what finds no room
// stays in the old process (as refused sessions do). If
// the new process dies or stops answering after the commit, the sessions it never got carry on
// here, those of the messages it did not answer are reset at both ends (it may have relayed some
// of their bytes: carrying them on here could lose or repeat them silently), and this process
// listens again.
//
// Paired sessions (v6): to the other end of the pair an upgrade is a lost link followed by a
// resume, the mechanism a pair already has for a NAT that forgot it (src/pair/). A paired session
// moves with its plain leg's socket and its channel: the offsets of both directions and the bytes
// sent and not yet acknowledged (as the channel leg's held bytes). The old process forgets the
// channel without a word to the peer; what the peer sends it meanwhile is never acknowledged, so
// it comes again. The new process resumes each one on a link of its own: a near end dials its
// far end (already dialing since it started) and sends RESUME; a far end listens on the pair
// address handed over and waits, and the old far end closes its links once the sessions are sent
// ('done'), so the near end connects again at once (not after 3 heartbeats) and resumes there.
// Nothing is lost, repeated or reordered: RESUME tells each side what the other received. A
// session moves only while Node's write queue to its socket is empty (those bytes are counted as
// received, maybe acknowledged, and no descriptor carries them); the old process tries again
// every SETTLE_POLL_MS for up to SETTLE_BOUND_MS, then leaves the rest where they are. Why not a
// new frame telling the peer to move: the peer needs nothing new (old releases at the other end
// work as they are), and a link lost in the middle of an upgrade is the same case.

import { spawn, type ChildProcess } from 'node:child_process'
import type { Logger } from 'pino'
import type { NativeAddon } from './native.ts'
import { KaError } from './errors.ts'
import type { MovedSession } from './listener.ts'
import { NOTHING_HELD, type Leg, type LegState, type PairChannelState, type TransportState } from './transport/transport.ts'
import { sessionIdsAfter, type SessionIdentity } from './session.ts'
import { freeDescriptors } from './refusals.ts'

/** Versions of the hand-over format this release speaks (the highest is offered first). */
export const HANDOVER_VERSIONS: readonly number[] = [6, 5, 4, 3, 2, 1]
/** The first version that moves established sessions. */
const SESSIONS_VERSION = 2
/** The first version in which the new process waits for 'go' after 'ready'. */
const COMMIT_VERSION = 3
/** The first version that moves the sessions of a route the new config lacks, to drain there. */
const REMOVED_ROUTES_VERSION = 4
/** The first version that moves the sessions after the commit, in answered messages. */
const BATCHED_VERSION = 5
/** The first version that moves paired sessions (a channel and one socket) and a far end's pair address. */
const PAIR_VERSION = 6
/** v6: how long the old process waits for paired sessions whose bytes are still on their way into their socket. */
const SETTLE_BOUND_MS = 3000
const SETTLE_POLL_MS = 5
/** v5: `sessions` messages sent and not yet answered ('took'), at most. */
const WINDOW = 2
/** v5: how long the new process may take to answer a `sessions` message. */
const TOOK_BOUND_MS = 5000
/** v5: descriptors a message leaves free in the new process (for its own accepts, logs, checks). */
const FREE_RESERVE = 64
/** Sessions per `sessions` message: two descriptors each, within the kernel's 253 per message. */
const SESSIONS_PER_MESSAGE = 125
/** v5: below this estimate of its free descriptors the new process counts them again (/proc/self/fd). */
const FREE_RECOUNT = 4 * 2 * SESSIONS_PER_MESSAGE
/**
 * A message of a SOCK_SEQPACKET pair must fit its send buffer (about 200 KiB by default): a
 * `sessions` message is closed once its JSON passes SESSIONS_MESSAGE_BYTES; a session holding
 * more than INLINE_HELD bytes sends them first in `held` messages of HELD_CHUNK bytes each.
 */
const SESSIONS_MESSAGE_BYTES = 96 * 1024
const INLINE_HELD = 16 * 1024
const HELD_CHUNK = 48 * 1024
export const HANDOVER_FD_ENV = 'KA_PROXY_HANDOVER_FD'
export const HANDOVER_STDERR_ENV = 'KA_PROXY_HANDOVER_STDERR'
/** How long the new process has to report ready, from its spawn. */
export const READY_BOUND_MS = 10_000
/** A new process that did not report ready gets this long to stop after SIGTERM, then SIGKILL. */
const KILL_AFTER_MS = 2000
const POLL_MS = 20
/** v5: how long one read for the new process's answer blocks this process's loop, at most. */
const ANSWER_WAIT_MS = 2
const MAX_MESSAGE = 1024 * 1024
/** The new process waits this long for the old one's answer (within the old one's bound). */
const RECEIVE_BOUND_MS = READY_BOUND_MS
/**
 * The new process waits this long for 'go' after its 'ready'. Its 'ready' comes after the old
 * process's spawn, so this bound ends after the old one's deadline: it never gives up on a 'go'
 * the old process may still send.
 */
const GO_BOUND_MS = READY_BOUND_MS

/**
 * Node flags that belong to this one process and must not reach the new one: the inspector's
 * (its port is this process's: the new one would fail to bind it, and --inspect-brk or
 * --inspect-wait would stop it before it could report ready) and --watch, which would make the
 * new process a watcher restarting a child instead of the proxy. A flag given as `--flag value`
 * takes its value along.
 */
const ONE_SHOT_FLAGS = new Set(['--inspect', '--inspect-brk', '--inspect-wait', '--inspect-port', '--debug-port', '--watch', '--watch-path', '--watch-preserve-output'])
const ONE_SHOT_WITH_VALUE = new Set(['--inspect-port', '--debug-port', '--watch-path'])

/**
 * The Node flags (execArgv, or NODE_OPTIONS split into words) the new process starts with: every
 * one but ONE_SHOT_FLAGS, so what matters (--import tsx, --max-old-space-size, --expose-gc...)
 * carries over.
 */
export function upgradeExecArgv(flags: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < flags.length; i++) {
    const flag = flags[i]!
    const name = flag.split('=', 1)[0]!
    if (!ONE_SHOT_FLAGS.has(name)) {
      out.push(flag)
      continue
    }
    if (ONE_SHOT_WITH_VALUE.has(name) && !flag.includes('=')) i++
  }
  return out
}

/** NODE_OPTIONS for the new process: the same, less ONE_SHOT_FLAGS (undefined stays unset). */
function upgradeNodeOptions(options: string | undefined): string | undefined {
  if (options === undefined) return undefined
  return upgradeExecArgv(options.split(/\s+/).filter((w) => w !== '')).join(' ')
}

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
  /** v2: the routes of the new config; up to v3 only their sessions move (a removed route's drain in the old process). */
  routes?: string[]
}

/** A session as the hand-over carries it; its descriptors (client, target; a paired session's plain leg) ride with the message. */
export interface HandedSession {
  route: string
  identity: SessionIdentity
  target: { host: string; port: number }
  state: TransportState
}

interface WireLeg {
  /** base64 */
  queued: string
  endRequested: boolean
  finSent: boolean
  endReceived: boolean
}

/** v6: a paired session's channel (PairChannelState, the token in hex); its unacknowledged bytes are the channel leg's `queued`. */
type WirePair = Omit<PairChannelState, 'token'> & { token: string }

interface WireSession {
  route: string
  id: number
  startedAtMs: number
  ended: Leg | null
  target: { host: string; port: number }
  clientAddress: string
  targetAddress: string | null
  bytesToTarget: number
  bytesToClient: number
  legs: Record<Leg, WireLeg>
  /** v6: a paired session, whose one descriptor is its plain leg's. */
  pair?: WirePair
}

interface Sessions {
  v: number
  type: 'sessions'
  sessions: WireSession[]
}

/** Part of the bytes a session's leg held, sent before its `sessions` message, in order. */
interface Held {
  v: number
  type: 'held'
  id: number
  leg: Leg
  /** base64 */
  data: string
}

interface Listeners {
  v: number
  type: 'listeners'
  pid: number
  listeners: HandedListener[]
  /** Per route name: its targets' health, failed connects and the target in use (TargetPool.exportState). */
  targets?: Record<string, unknown>
  /** v2: how many sessions follow, in `sessions` messages; and the next session id here. */
  sessions?: number
  nextSession?: number
  /** v4: per route the hello did not name, its settings as its config would write them (RawOptions). */
  removed?: Record<string, unknown>
  /** v5: per route, the keepalive settings its sessions' sockets have (the new process sets none that match). */
  keepalive?: Record<string, unknown>
}

interface Ready {
  v: number
  type: 'ready'
  pid: number
  listeners: number
  /** v2: ids of sessions handed over that it could not carry on: the old process keeps them. */
  refused?: number[]
  /** v5: descriptors it has free (its limit less those open). */
  free?: number
}

/** v3: the old process's commit, the answer to 'ready': from now on the sessions are the new one's. */
interface Go {
  v: number
  type: 'go'
  /** v5: the next session id in the old process, which accepted until now. */
  nextSession?: number
}

/** v5: the new process's answer to a `sessions` message: the ones it could not carry on. */
interface Took {
  v: number
  type: 'took'
  refused: number[]
  /** Descriptors it has free now. */
  free?: number
}

/** v5: every session that can move has moved. */
interface Done {
  v: number
  type: 'done'
  sessions: number
}

type Message = Hello | Listeners | Sessions | Held | Ready | Go | Took | Done

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
  /** Per route name: the keepalive settings its sessions' sockets have (v5). */
  keepaliveStates(): Record<string, unknown>
  sessionCount: number
  /** The sessions that can move (established, not ending) leave their routes: those named, or (undefined) all; at most `limit`, none of the ids in `skip`. */
  handOverSessions(routes: ReadonlySet<string> | undefined, limit?: number, skip?: ReadonlySet<number>, paired?: boolean): Array<MovedSession & { route: string }>
  /** v6: sessions that cannot move yet but will shortly (a paired session's bytes on their way into its socket). */
  readonly settlingSessions: number
  /** Per running route not named, its settings as its config would write them (RawOptions). */
  removedRoutes(kept: ReadonlySet<string>): Record<string, unknown>
  /** Sessions handed over that the new process did not take: carried on here again. */
  takeBack(sessions: Array<MovedSession & { route: string }>): void
  /** The next session id here (the new process numbers its own after it). */
  nextSessionId: number
  /** v5, at the commit: the listening sockets here close (the new process's copies accept). */
  stopAccepting(): void
  /** v5, the new process failed after the commit: listen again. */
  resumeAccepting(): Promise<void>
}

/** sessions: moved; kept: refused by the new process, carried on here; held: bytes the moved sessions' legs held. */
/** A failed upgrade names the new process (`pid`) once one was started. */
export type UpgradeOutcome = { ok: true; pid: number; listeners: number; sessions: number; kept: number; held: number; ms: number; noRoom?: boolean } | { ok: false; reason: string; pid?: number }

/** The bytes the moved sessions' legs held. */
function heldBytes(moved: Array<MovedSession & { route: string }>): number {
  return moved.reduce((n, m) => n + m.transport.state.legs.client.queued.length + m.transport.state.legs.target.queued.length, 0)
}

/** `inline`: the held bytes ride in the message; else they went before it in `held` messages. */
function wireSession(m: MovedSession & { route: string }, inline: boolean): WireSession {
  const { state } = m.transport
  const leg = (l: LegState): WireLeg => ({ queued: inline ? l.queued.toString('base64') : '', endRequested: l.endRequested, finSent: l.finSent, endReceived: l.endReceived })
  return {
    route: m.route,
    id: m.identity.id,
    startedAtMs: m.identity.startedAtMs,
    ended: m.identity.ended,
    target: m.target,
    clientAddress: state.clientAddress,
    targetAddress: state.targetAddress ?? null,
    bytesToTarget: state.bytesToTarget,
    bytesToClient: state.bytesToClient,
    legs: { client: leg(state.legs.client), target: leg(state.legs.target) },
    ...(state.pair !== undefined && { pair: { ...state.pair, token: state.pair.token.toString('hex') } }),
  }
}

/** Descriptors a session travels with: its two sockets, or a paired session's one. */
function descriptorsOf(w: WireSession): number {
  return w.pair === undefined ? 2 : 1
}

function pairFromWire(p: WirePair, num: (v: unknown) => number): PairChannelState {
  if (p === null || typeof p !== 'object' || typeof p.token !== 'string' || !/^[0-9a-f]{32}$/.test(p.token)) throw new HandoverError('a paired session that is not understood')
  const lostMs = p.lostMs === null ? null : num(p.lostMs)
  return { id: num(p.id), token: Buffer.from(p.token, 'hex'), sent: num(p.sent), acked: num(p.acked), received: num(p.received), finSent: p.finSent === true, finReceived: p.finReceived === true, finAcked: p.finAcked === true, resumes: num(p.resumes), lostMs }
}

function fromWire(w: WireSession, held: Map<string, Buffer[]>): HandedSession {
  const bool = (v: unknown): boolean => v === true
  const num = (v: unknown): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new HandoverError('a session with a count that is not a number')
    return v
  }
  const leg = (l: WireLeg | undefined, name: Leg): LegState => {
    if (l === undefined || typeof l !== 'object' || typeof l.queued !== 'string') throw new HandoverError('a session without its legs')
    // Most legs hold nothing: no buffer is made for them (a base64 decode is a call into C++).
    const before = held.size === 0 ? undefined : held.get(`${w.id} ${name}`)
    const queued = before === undefined ? (l.queued === '' ? NOTHING_HELD : Buffer.from(l.queued, 'base64')) : Buffer.concat([...before, Buffer.from(l.queued, 'base64')])
    return { queued, endRequested: bool(l.endRequested), finSent: bool(l.finSent), endReceived: bool(l.endReceived), connecting: false }
  }
  if (w === null || typeof w !== 'object' || typeof w.route !== 'string' || typeof w.clientAddress !== 'string' || w.target === null || typeof w.target !== 'object' || typeof w.target.host !== 'string') {
    throw new HandoverError('a session that is not understood')
  }
  const ended = w.ended === 'client' || w.ended === 'target' ? w.ended : null
  return {
    route: w.route,
    identity: { id: num(w.id), startedAtMs: num(w.startedAtMs), ended },
    target: { host: w.target.host, port: num(w.target.port) },
    state: {
      legs: { client: leg(w.legs?.client, 'client'), target: leg(w.legs?.target, 'target') },
      bytesToTarget: num(w.bytesToTarget),
      bytesToClient: num(w.bytesToClient),
      clientAddress: w.clientAddress,
      targetAddress: typeof w.targetAddress === 'string' ? w.targetAddress : undefined,
      ...(w.pair !== undefined && { pair: pairFromWire(w.pair, num) }),
    },
  }
}

/**
 * The old process's side: one upgrade at a time. `start` resolves once the new process serves
 * (then this one stops accepting and exits when its own sessions end) or failed (nothing changed).
 */
export class Upgrader {
  readonly #native: NativeAddon
  readonly #logger: Logger
  #child: ChildProcess | undefined
  /** The attempt under way: resolves once it has an outcome (sessions taken back if it failed). */
  #attempt: Promise<UpgradeOutcome> | undefined
  /** A signal asked this process to stop: the attempt fails unless the new process already took over. */
  #aborted = false
  /** The new process owns the sessions handed over ('go' sent; v2: 'ready' read). */
  #committed = false
  /** Sessions handed over in this attempt: their descriptors stay open here until the new process is ready. */
  #moved: Array<MovedSession & { route: string }> = []

  constructor(native: NativeAddon, logger: Logger) {
    this.#native = native
    this.#logger = logger
  }

  get running(): boolean {
    return this.#attempt !== undefined
  }

  start(source: UpgradeSource): Promise<UpgradeOutcome> {
    this.#aborted = false
    this.#committed = false
    const attempt = this.#attempt = this.#start(source).finally(() => (this.#attempt = undefined))
    return attempt
  }

  async #start(source: UpgradeSource): Promise<UpgradeOutcome> {
    this.#moved = []
    try {
      const outcome = await this.#run(source)
      // Failed: the new process never moved a byte of them (it relays only once ready), so every
      // session handed over carries on here, from the very state it left in.
      if (!outcome.ok && this.#moved.length > 0) source.takeBack(this.#moved)
      return outcome
    } finally {
      for (const m of this.#moved) for (const fd of m.transport.fds) this.#native.closeFd(fd)
      this.#moved = []
      this.#child = undefined
    }
  }

  /**
   * This process is stopping: a new process that has not taken over is stopped and the sessions
   * handed over come back here. Resolves once the attempt has its outcome (undefined: none runs);
   * ok means the new process had taken over before.
   */
  abort(): Promise<UpgradeOutcome> | undefined {
    if (this.#attempt === undefined) return undefined
    if (!this.#committed) {
      this.#aborted = true
      // Holding sessions handed over, it must not stop gracefully (that would end them with a FIN).
      this.#child?.kill(this.#moved.length > 0 ? 'SIGKILL' : 'SIGTERM')
    }
    return this.#attempt
  }

  async #run(source: UpgradeSource): Promise<UpgradeOutcome> {
    const started = performance.now()
    const deadline = started + READY_BOUND_MS
    const [mine, theirs] = this.#native.seqpacketPair()
    let child: ChildProcess
    try {
      const env: NodeJS.ProcessEnv = { ...process.env, [HANDOVER_FD_ENV]: '3', [HANDOVER_STDERR_ENV]: '4' }
      const nodeOptions = upgradeNodeOptions(process.env.NODE_OPTIONS)
      if (nodeOptions !== undefined) env.NODE_OPTIONS = nodeOptions
      child = spawn(process.execPath, [...upgradeExecArgv(process.execArgv), ...process.argv.slice(1)], {
        stdio: ['inherit', 'inherit', 'pipe', theirs, 2],
        env,
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
      if (child.exitCode === null && child.signalCode === null && this.#moved.length > 0) {
        // It holds sessions handed over: no graceful stop (that would end them with a FIN); its
        // death closes only its copies, and this process carries them on.
        child.kill('SIGKILL')
      } else if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS).unref()
      }
      const first = stderr.line()
      return { ok: false, reason: first === undefined ? why : `${why}: ${first}`, pid: child.pid }
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
      const left = (): number => Math.max(1, Math.ceil(deadline - performance.now()))
      const batched = version >= BATCHED_VERSION
      if (version >= SESSIONS_VERSION) {
        // Up to v4, from here until 'ready' the sessions handed over move no byte in either process.
        const kept = new Set(Array.isArray(hello.routes) ? hello.routes.map(String) : [])
        if (version >= REMOVED_ROUTES_VERSION) message.removed = source.removedRoutes(kept)
        if (!batched) this.#moved = source.handOverSessions(version >= REMOVED_ROUTES_VERSION ? undefined : kept)
        else message.keepalive = source.keepaliveStates()
        message.sessions = batched ? source.sessionCount : this.#moved.length
        message.nextSession = source.nextSessionId
      }
      this.#native.sendFds(mine, encode(message), listeners.map((l) => l.fd), left())
      if (!batched) this.#sendSessions(mine, version, this.#moved, left)
      const ready = await this.#receive(mine, deadline, () => exited)
      if (typeof ready === 'string') return fail(ready)
      if (ready.type !== 'ready') return fail(`the new process sent '${ready.type}' where 'ready' was expected`)
      // The one point where ownership passes (see the header): nothing here awaits.
      if (version >= COMMIT_VERSION) {
        if (this.#aborted) return fail('this process is stopping: the new process was stopped before it took over')
        if (performance.now() > deadline) return fail(`the new process did not report ready within ${READY_BOUND_MS / 1000} s`)
        const go: Go = { v: version, type: 'go', ...(batched && { nextSession: source.nextSessionId }) }
        this.#native.sendFds(mine, encode(go), [], left())
      }
      this.#committed = true
      if (batched) {
        source.stopAccepting()
        const moved = await this.#moveSessions(mine, version, source, () => exited, typeof ready.free === 'number' ? ready.free : Infinity)
        if (!moved.ok) {
          // Dead or silent after the commit: what it was sent and did not answer is reset here
          // (see the header), the rest never left, and this process listens again.
          if (child.exitCode === null && child.signalCode === null) {
            child.kill('SIGKILL')
            await new Promise((r) => child.once('exit', r))
          }
          const lost = this.#moved.length
          for (const m of this.#moved) {
            for (const fd of m.transport.fds) this.#native.closeReset(fd)
            m.transport.reset?.()
          }
          this.#moved = []
          await source.resumeAccepting()
          const first = stderr.line()
          const lostText = lost > 0 ? `; ${lost} session${lost === 1 ? '' : 's'} it was handed reset` : ''
          return { ok: false, reason: `the new process ${moved.reason} after it took over${lostText}${first === undefined ? '' : `: ${first}`}` }
        }
        child.stderr!.destroy()
        child.unref()
        return { ok: true, pid: child.pid!, listeners: listeners.length, sessions: moved.sessions, kept: moved.kept, held: moved.held, ms: Math.round(performance.now() - started), noRoom: moved.noRoom }
      }
      // What it could not carry on stays here; the rest is its now (the copies here close after).
      const refused = new Set(Array.isArray(ready.refused) ? ready.refused : [])
      const kept = this.#moved.filter((m) => refused.has(m.identity.id))
      if (kept.length > 0) source.takeBack(kept)
      const sessions = this.#moved.length - kept.length
      // Its stderr is the real one again; this pipe has nothing more to carry.
      child.stderr!.destroy()
      child.unref()
      return { ok: true, pid: child.pid!, listeners: listeners.length, sessions, kept: kept.length, held: heldBytes(this.#moved), ms: Math.round(performance.now() - started) }
    } catch (err) {
      return fail((err as Error).message)
    } finally {
      this.#native.closeFd(mine)
    }
  }

  /**
   * `sessions` and `held` messages for `moved`, their descriptors along; returns the sessions of
   * each `sessions` message, in order. A message stays within SESSIONS_PER_MESSAGE sessions and
   * about SESSIONS_MESSAGE_BYTES; a session holding more than INLINE_HELD bytes sends them first.
   */
  #sendSessions(sock: number, version: number, moved: Array<MovedSession & { route: string }>, left: () => number): Array<Array<MovedSession & { route: string }>> {
    const sent: Array<Array<MovedSession & { route: string }>> = []
    for (let i = 0; i < moved.length; ) {
      const batch: WireSession[] = []
      const fds: number[] = []
      const first = i
      let size = 0
      for (; i < moved.length && batch.length < SESSIONS_PER_MESSAGE && size < SESSIONS_MESSAGE_BYTES; i++) {
        const m = moved[i]!
        const { legs } = m.transport.state
        const inline = legs.client.queued.length + legs.target.queued.length <= INLINE_HELD
        if (!inline) {
          for (const name of ['client', 'target'] as const) {
            const queued = legs[name].queued
            for (let at = 0; at < queued.length; at += HELD_CHUNK) {
              const held: Held = { v: version, type: 'held', id: m.identity.id, leg: name, data: queued.subarray(at, at + HELD_CHUNK).toString('base64') }
              this.#native.sendFds(sock, encode(held), [], left())
            }
          }
        }
        const w = wireSession(m, inline)
        size += w.legs.client.queued.length + w.legs.target.queued.length + 512
        batch.push(w)
        fds.push(...m.transport.fds)
      }
      this.#native.sendFds(sock, encode({ v: version, type: 'sessions', sessions: batch }), fds, left())
      sent.push(moved.slice(first, i))
    }
    return sent
  }

  /**
   * v5, after the commit: the sessions leave the routes SESSIONS_PER_MESSAGE at a time, at most
   * WINDOW messages unanswered; each answer says which it refused (carried on here again), and
   * this process's copies of the others close. `this.#moved` holds the unanswered ones.
   */
  async #moveSessions(sock: number, version: number, source: UpgradeSource, exited: () => string | undefined, free: number): Promise<{ ok: true; sessions: number; kept: number; held: number; noRoom: boolean } | { ok: false; reason: string }> {
    const unanswered: Array<Array<MovedSession & { route: string }>> = []
    let sessions = 0
    let kept = 0
    let held = 0
    let more = true
    // Refused by the new process (out of descriptors...): carried on here, and never sent again.
    const refusedIds = new Set<number>()
    let noRoom = false
    const paired = version >= PAIR_VERSION
    const settleUntil = performance.now() + SETTLE_BOUND_MS
    for (;;) {
      const bound = performance.now() + TOOK_BOUND_MS
      const left = (): number => Math.max(1, Math.ceil(bound - performance.now()))
      // v6: none can move now, but paired sessions will once their bytes are in their socket.
      let settling = false
      while (more && unanswered.length < WINDOW) {
        // Its room as last told, less what the unanswered messages will take: two per session.
        const inFlight = unanswered.reduce((n, b) => n + b.length, 0)
        const room = Math.floor((free - FREE_RESERVE) / 2) - inFlight
        if (room <= 0) {
          if (unanswered.length === 0) {
            more = false
            noRoom = true
          }
          break
        }
        const taken = source.handOverSessions(undefined, Math.min(SESSIONS_PER_MESSAGE, room), refusedIds, paired)
        if (taken.length === 0) {
          settling = paired && source.settlingSessions > 0 && performance.now() < settleUntil
          more = settling
          break
        }
        this.#moved.push(...taken)
        try {
          unanswered.push(...this.#sendSessions(sock, version, taken, left))
        } catch (err) {
          return { ok: false, reason: `stopped reading the sessions (${(err as Error).message})` }
        }
      }
      if (unanswered.length === 0) {
        if (!settling) break
        await new Promise((r) => setTimeout(r, SETTLE_POLL_MS))
        continue
      }
      let answer: Message | string
      try {
        answer = await this.#receive(sock, bound, exited, 'answered')
      } catch (err) {
        // A reset socket: it died; its exit status says more.
        await new Promise((r) => setTimeout(r, 200))
        answer = `the new process ${exited() ?? `broke the hand-over socket (${(err as Error).message})`} before it answered`
      }
      if (typeof answer === 'string') return { ok: false, reason: answer.replace(/^the new process /, '') }
      if (answer.type !== 'took') return { ok: false, reason: `sent '${answer.type}' where 'took' was expected` }
      const batch = unanswered.shift()!
      if (typeof answer.free === 'number') free = answer.free
      const refused = new Set(Array.isArray(answer.refused) ? answer.refused : [])
      const back = batch.filter((m) => refused.has(m.identity.id))
      for (const m of back) refusedIds.add(m.identity.id)
      if (back.length > 0) source.takeBack(back)
      for (const m of batch) if (!refused.has(m.identity.id)) for (const fd of m.transport.fds) this.#native.closeFd(fd)
      const answered = new Set(batch)
      this.#moved = this.#moved.filter((m) => !answered.has(m))
      sessions += batch.length - back.length
      kept += back.length
      held += heldBytes(batch)
      // An answer that came within the read's wait returns without the event loop running: the
      // sessions still here would wait for the whole hand-over. They run between messages.
      await new Promise((r) => setImmediate(r))
    }
    try {
      this.#native.sendFds(sock, encode({ v: version, type: 'done', sessions }), [], TOOK_BOUND_MS)
    } catch {
      // Every session it was sent is answered: it has them all, whether or not it reads this.
    }
    return { ok: true, sessions, kept, held, noRoom }
  }

  /**
   * The next message, or why none came (the new process exited, closed, or the bound passed);
   * `what` names what it was waiting for. Between looks the event loop runs (the sessions here
   * keep moving): POLL_MS later while the new process starts; while it answers a message, at
   * once, after a read that waits up to ANSWER_WAIT_MS, so an answer is seen when it comes.
   */
  async #receive(sock: number, deadline: number, exited: () => string | undefined, what: 'ready' | 'answered' = 'ready'): Promise<Message | string> {
    const waitMs = what === 'answered' ? ANSWER_WAIT_MS : 0
    for (;;) {
      let got: { payload: Buffer; fds: number[] } | null
      try {
        got = this.#native.recvFds(sock, MAX_MESSAGE, waitMs)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw err
        const why = exited()
        if (why !== undefined) return `the new process ${why} before it ${what === 'ready' ? 'was ready' : what}`
        if (performance.now() >= deadline) return what === 'ready' ? `the new process did not report ready within ${READY_BOUND_MS / 1000} s` : `the new process ${what} nothing within ${TOOK_BOUND_MS / 1000} s`
        await new Promise((r) => (what === 'answered' ? setImmediate(r) : setTimeout(r, POLL_MS)))
        continue
      }
      if (got === null) {
        // Closed: wait a moment for its exit status, which says more.
        await new Promise((r) => setTimeout(r, 200))
        return `the new process ${exited() ?? 'closed the hand-over socket'} before it ${what === 'ready' ? 'was ready' : what}`
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
  /** Established sessions handed over, each with its two descriptors (client, target). */
  readonly sessions: Array<HandedSession & { fds: number[] }>
  /** v4: routes this config lacks whose sessions came too: their settings, unchecked (RawOptions). */
  readonly removed: Record<string, unknown>
  /** v5: per route, the keepalive settings the sessions' sockets have in the old process. */
  readonly keepalive: Record<string, unknown>
  readonly #fds: Map<string, number>
  readonly #native: NativeAddon

  constructor(from: number, fds: Map<string, number>, targets: Record<string, unknown>, sessions: Array<HandedSession & { fds: number[] }>, native: NativeAddon, removed: Record<string, unknown> = {}, keepalive: Record<string, unknown> = {}) {
    this.from = from
    this.keepalive = keepalive
    this.#fds = fds
    this.targets = targets
    this.sessions = sessions
    this.removed = removed
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
  receive(routes: string[]): InheritedListeners {
    this.#send({ v: this.#version, type: 'hello', pid: process.pid, accepts: [...HANDOVER_VERSIONS], routes })
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
      const sessions = this.#receiveSessions(message)
      const removed = message.removed !== null && typeof message.removed === 'object' ? message.removed : {}
      const keepalive = message.keepalive !== null && typeof message.keepalive === 'object' ? message.keepalive : {}
      return new InheritedListeners(message.pid, fds, targets, sessions, this.#native, removed, keepalive)
    } catch (err) {
      for (const fd of got.fds) this.#native.closeFd(fd)
      throw err
    }
  }

  /** v5: the sessions move after 'go' (receiveBatches), none with the listeners. */
  get batched(): boolean {
    return this.#version >= BATCHED_VERSION
  }

  /** The `sessions` messages that follow the listeners (v2 to v4), all of them, or HandoverError. */
  #receiveSessions(message: Listeners): Array<HandedSession & { fds: number[] }> {
    const expected = message.v >= SESSIONS_VERSION && message.v < BATCHED_VERSION && typeof message.sessions === 'number' ? message.sessions : 0
    if (typeof message.nextSession === 'number') sessionIdsAfter(message.nextSession - 1)
    const out: Array<HandedSession & { fds: number[] }> = []
    const held = new Map<string, Buffer[]>()
    try {
      while (out.length < expected) {
        const got = this.#native.recvFds(this.#sock, MAX_MESSAGE, RECEIVE_BOUND_MS)
        if (got === null) throw new HandoverError('the old process closed the hand-over socket while sending the sessions')
        const batch = this.#sessionsOf(got, held)
        if (batch === 'done') throw new HandoverError("'done' before the sessions the listeners message announced")
        if (batch !== undefined) out.push(...batch)
      }
    } catch (err) {
      for (const s of out) for (const fd of s.fds) this.#native.closeFd(fd)
      throw err
    }
    return out
  }

  /**
   * One message of the sessions' hand-over: a `held` part is kept in `held` (undefined back), a
   * `sessions` message gives its sessions, each with its two descriptors, v5's `done` says so;
   * anything else throws HandoverError with the message's descriptors closed.
   */
  #sessionsOf(got: { payload: Buffer; fds: number[] }, held: Map<string, Buffer[]>): Array<HandedSession & { fds: number[] }> | 'done' | undefined {
    let batch: HandedSession[]
    try {
      const m = decode(got.payload)
      if (m.type === 'done' && got.fds.length === 0) return 'done'
      if (m.type === 'held' && got.fds.length === 0 && typeof m.data === 'string') {
        const key = `${m.id} ${m.leg}`
        held.set(key, [...(held.get(key) ?? []), Buffer.from(m.data, 'base64')])
        return undefined
      }
      if (m.type !== 'sessions' || !Array.isArray(m.sessions) || m.sessions.some((w) => w === null || typeof w !== 'object') || got.fds.length !== m.sessions.reduce((n, w) => n + descriptorsOf(w), 0)) {
        throw new HandoverError(`expected sessions and their descriptors (two each, one a paired session), got '${m.type}' with ${got.fds.length} descriptors`)
      }
      batch = m.sessions.map((w) => fromWire(w, held))
    } catch (err) {
      for (const fd of got.fds) this.#native.closeFd(fd)
      throw err
    }
    for (const s of batch) {
      held.delete(`${s.identity.id} client`)
      held.delete(`${s.identity.id} target`)
      sessionIdsAfter(s.identity.id)
    }
    let at = 0
    return batch.map((s) => {
      const n = s.state.pair === undefined ? 2 : 1
      at += n
      return { ...s, fds: got.fds.slice(at - n, at) }
    })
  }

  /**
   * v5, after 'go': each `sessions` message as it comes, to `adopt` (which owns the descriptors
   * and returns the ids it could not carry on), answered with 'took'; until 'done'. Reads without
   * blocking the event loop (the sessions already here relay meanwhile). Resolves with what
   * moved; `gone`: the old process closed or went silent before 'done' (what came is kept).
   */
  async receiveBatches(adopt: (sessions: Array<HandedSession & { fds: number[] }>) => number[]): Promise<{ sessions: number; refused: number; gone?: string }> {
    const held = new Map<string, Buffer[]>()
    let sessions = 0
    let refused = 0
    let heard = performance.now()
    // Counted once, then estimated (two a session taken), counted again when the estimate runs low.
    let free = freeDescriptors()
    try {
      for (;;) {
        let got: { payload: Buffer; fds: number[] } | null
        try {
          got = this.#native.recvFds(this.#sock, MAX_MESSAGE, 0)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw err
          if (performance.now() - heard > RECEIVE_BOUND_MS) return { sessions, refused, gone: `nothing from the old process for ${RECEIVE_BOUND_MS / 1000} s` }
          await new Promise((r) => setTimeout(r, 1))
          continue
        }
        heard = performance.now()
        if (got === null) return { sessions, refused, gone: 'the old process closed the hand-over socket' }
        const batch = this.#sessionsOf(got, held)
        if (batch === 'done') return { sessions, refused }
        if (batch === undefined) continue
        const no = adopt(batch)
        sessions += batch.length - no.length
        refused += no.length
        free -= 2 * (batch.length - no.length)
        if (free < FREE_RECOUNT) free = freeDescriptors()
        this.#send({ v: this.#version, type: 'took', refused: no, free })
        // The sessions taken so far move bytes only when the loop runs: it runs between messages
        // (the next one is often waiting already), so no session waits for the whole hand-over.
        await new Promise((r) => setImmediate(r))
      }
    } catch (err) {
      return { sessions, refused, gone: (err as Error).message }
    } finally {
      this.#native.closeFd(this.#sock)
    }
  }

  /**
   * Every route listens: tells the old process, takes the real stderr back and (v3) waits for its
   * 'go'. Throws HandoverError when none comes: the old process keeps the sessions, and this one
   * must exit without touching them.
   */
  ready(listeners: number, refused: number[] = []): void {
    if (this.#stderr !== undefined) this.#native.moveFd(this.#stderr, 2)
    let keepOpen = false
    try {
      this.#send({ v: this.#version, type: 'ready', pid: process.pid, listeners, ...(this.#version >= SESSIONS_VERSION && { refused }), ...(this.batched && { free: freeDescriptors() }) })
      if (this.#version < COMMIT_VERSION) return
      let got: { payload: Buffer; fds: number[] } | null
      try {
        got = this.#native.recvFds(this.#sock, MAX_MESSAGE, GO_BOUND_MS)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw err
        throw new HandoverError(`the old process did not confirm within ${GO_BOUND_MS / 1000} s; it keeps the sessions`)
      }
      if (got === null) throw new HandoverError('the old process did not confirm (it stopped or gave up); it keeps the sessions')
      for (const fd of got.fds) this.#native.closeFd(fd)
      const m = decode(got.payload)
      if (m.type !== 'go') throw new HandoverError(`expected 'go', got '${m.type}'; the old process keeps the sessions`)
      if (typeof m.nextSession === 'number') sessionIdsAfter(m.nextSession - 1)
      // v5: the sessions follow (receiveBatches).
      keepOpen = this.batched
    } finally {
      if (!keepOpen) this.#native.closeFd(this.#sock)
    }
  }

  #send(message: Message): void {
    this.#native.sendFds(this.#sock, encode(message), [], RECEIVE_BOUND_MS)
  }
}
