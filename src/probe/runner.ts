// The measurement. Every connection is opened with keepalive off, left idle for its planned
// time, and proven alive or dead with one exchange of the check's protocol. Phases:
//
// 1. Reach: one connection proven at once; failing that, nothing can be measured (exit 3).
// 2. Sweep: `connections` connections at once, idle times staggered over (0, max]. The first
//    death ends the sweep: connections planned longer and still idle are closed unjudged.
// 3. Bisect: new connections spread evenly inside the bracket (longest idle that survived,
//    shortest that died), round after round, until the bracket is within the resolution.
// 4. Keepalive: alongside the bisection, a few connections with TCP keepalive at about half
//    the timeout stay idle twice the (latest) upper bound, then are proven alive or dead.
//
// A connection the *server* ended (see Death.byServer) bounds nothing on the path; its time
// is reported as the server's own limit. Every figure reported is a sample measured here.

import { SocketControl, type KeepaliveReadback } from '../socket-control.ts'
import type { KeepaliveSettings } from '../keepalive/settings.ts'
import { Death, TargetUnreachable, type How, type ProbeCheck, type ProbeConnection, type ProbeTarget } from './check.ts'
import { pointsNeeded, resolutionAt, splitInterval, staggerIdle } from './schedule.ts'

export interface ProbeSettings {
  target: ProbeTarget
  check: ProbeCheck
  /** Longest idle time tried, seconds. */
  max: number
  /** The bracket is fine enough at this width (seconds) or 5 % of the timeout, whichever is larger. */
  resolution: number
  /** Connections open to the target at once, at most. */
  connections: number
  /** Seconds an exchange may take before the connection counts as silently dead. */
  replyTimeout: number
  connectTimeout: number
  /** Check whether keepalive holds the path once a timeout is found. */
  keepaliveCheck: boolean
  /** false: Node's setKeepAlive instead of the native helper (interval and count then fixed by Node). */
  native: boolean
}

export type Phase = 'sweep' | 'bisect' | 'keepalive'

export interface Sample {
  /** Seconds the connection had been idle when it was proven alive, or found dead. */
  idle: number
  alive: boolean
  how: How | null
  phase: Phase
  /** The server itself ended it: says nothing about the path. */
  byServer: boolean
  detail?: string
}

export interface Bracket {
  low: number
  high: number
  how: How
}

export interface KeepaliveCheck {
  /** What was asked for, and what the kernel has in force (read back with the native helper). */
  settings: KeepaliveSettings
  applied: KeepaliveReadback | undefined
  native: boolean
  samples: Sample[]
  holds: boolean
}

export interface ProbeResult {
  samples: Sample[]
  /** The path's idle timeout; undefined when nothing on the path dropped a connection up to max. */
  bracket: Bracket | undefined
  serverClosedAfter: number | undefined
  keepalive: KeepaliveCheck | undefined
  /** The first exchange, milliseconds. */
  rttMs: number
  durationS: number
  notes: string[]
}

export interface ProgressState {
  phase: Phase | 'reach'
  elapsedS: number
  expectedS: number
  alive: number
  dead: number
  pending: number
}

/** Rounds of bisection at most: one or two are the rule, the cap bounds a path that keeps changing. */
const MAX_ROUNDS = 6
/** Connections of the keepalive check. */
const KEEPALIVE_CONNECTIONS = 3

function seconds(ms: number): number {
  return Math.round(ms / 10) / 100
}

/** Resolves when `ms` have passed, the connection ended, or `signal` aborted. */
function idleFor(dueAt: () => number, conn: ProbeConnection, signal: AbortSignal | undefined): Promise<'due' | 'cancelled' | Death> {
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined
    const finish = (outcome: 'due' | 'cancelled' | Death): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      resolve(outcome)
    }
    const onAbort = (): void => finish('cancelled')
    signal?.addEventListener('abort', onAbort, { once: true })
    // The due time may move earlier while waiting (the keepalive check's bound is refined).
    const arm = (): void => {
      const left = dueAt() - performance.now()
      if (left <= 0) finish('due')
      else timer = setTimeout(arm, Math.min(left, 1000))
    }
    void conn.ended.then(finish)
    if (signal?.aborted) finish('cancelled')
    else arm()
  })
}

export class ProbeRunner {
  readonly #s: ProbeSettings
  readonly #onProgress: ((p: ProgressState) => void) | undefined
  readonly #startedAt = performance.now()
  readonly #samples: Sample[] = []
  readonly #notes: string[] = []
  #phase: ProgressState['phase'] = 'reach'
  #expectedEnd = 0
  #pending = 0
  #bracket: Bracket | undefined
  #rttMs = 0
  #serverIdleLimit: number | undefined

  constructor(settings: ProbeSettings, onProgress?: (p: ProgressState) => void) {
    this.#s = settings
    this.#onProgress = onProgress
  }

  progress(): ProgressState {
    const now = performance.now()
    const all = this.#samples
    return {
      phase: this.#phase,
      elapsedS: seconds(now - this.#startedAt),
      expectedS: seconds(Math.max(this.#expectedEnd, now) - this.#startedAt),
      alive: all.filter((s) => s.alive).length,
      dead: all.filter((s) => !s.alive).length,
      pending: this.#pending,
    }
  }

  async run(): Promise<ProbeResult> {
    const s = this.#s
    this.#rttMs = await this.#reach()
    this.#serverIdleLimit = await s.check.serverIdleLimit?.(s.target, s.replyTimeout * 1000)
    if (this.#serverIdleLimit !== undefined) this.#notes.push(`the server declares an idle limit of ${this.#serverIdleLimit} s: closes from then on are its own`)

    this.#enter('sweep', s.max)
    await this.#round(staggerIdle(0, s.max, s.connections), 'sweep')
    this.#bracket = bracketOf(this.#samples)

    let keepalive: Promise<KeepaliveCheck> | undefined
    const b0 = this.#bracket
    if (b0 && s.keepaliveCheck) keepalive = this.#keepaliveCheck(b0)
    const bisectWith = keepalive ? s.connections - KEEPALIVE_CONNECTIONS : s.connections
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const b = this.#bracket
      if (!b) break
      const resolution = resolutionAt(b.high, s.resolution)
      if (b.high - b.low <= resolution) break
      const points = splitInterval(b.low, b.high, pointsNeeded(b.low, b.high, resolution, bisectWith))
      if (points.length === 0) break
      this.#enter('bisect', b.high)
      await this.#round(points, 'bisect')
      this.#bracket = bracketOf(this.#samples)
    }
    if (keepalive) this.#phase = 'keepalive'
    return this.result(await keepalive)
  }

  /** What has been measured so far (all of it once run() is done); `keepalive` when it was checked. */
  result(keepalive?: KeepaliveCheck): ProbeResult {
    const b = bracketOf(this.#samples)
    const notes = [...this.#notes]
    if (b) {
      const late = this.#samples.filter((x) => x.alive && x.idle > b.high)
      if (late.length > 0) {
        notes.push(`the path is not consistent: a connection idle ${Math.max(...late.map((x) => x.idle))} s survived, one idle ${b.high} s did not`)
      }
    }
    const serverClosed = this.#samples.filter((x) => !x.alive && x.byServer)
    return {
      samples: [...this.#samples].sort((x, y) => x.idle - y.idle),
      bracket: b,
      serverClosedAfter: serverClosed.length > 0 ? Math.min(...serverClosed.map((x) => x.idle)) : undefined,
      keepalive,
      rttMs: this.#rttMs,
      durationS: seconds(performance.now() - this.#startedAt),
      notes,
    }
  }


  /** One connection proven at once: the target is there and speaks the check's protocol. */
  async #reach(): Promise<number> {
    const s = this.#s
    const conn = s.check.open(s.target, s.connectTimeout * 1000)
    let ok = false
    try {
      await conn.ready
      const t0 = performance.now()
      await conn.prove(s.replyTimeout * 1000)
      ok = true
      return Math.round((performance.now() - t0) * 10) / 10
    } catch (err) {
      const detail = err instanceof Death ? err.message : (err as Error).message
      throw new TargetUnreachable(s.target, `no ${s.check.name} answer (${detail})`)
    } finally {
      conn.close(!ok)
    }
  }

  #enter(phase: Phase, longestIdle: number): void {
    this.#phase = phase
    const end = performance.now() + (longestIdle + this.#s.replyTimeout) * 1000
    this.#expectedEnd = Math.max(this.#expectedEnd, end)
    this.#report()
  }

  #report(): void {
    this.#onProgress?.(this.progress())
  }

  /** Connections idle for `idles` at once; a death on the path closes those planned longer that are still idle. */
  async #round(idles: number[], phase: Phase): Promise<void> {
    const controllers = idles.map(() => new AbortController())
    await Promise.all(
      idles.map(async (idle, i) => {
        const plannedAt = (start: number): number => start + idle * 1000
        const sample = await this.#sample(plannedAt, phase, controllers[i]!.signal)
        if (!sample) return
        this.#samples.push(sample)
        if (!sample.alive && !sample.byServer) {
          idles.forEach((other, j) => {
            if (other > sample.idle) controllers[j]!.abort()
          })
        }
        this.#report()
      }),
    )
  }

  /**
   * Opens one connection, lets it sit until `dueAt(start)`, proves it. undefined when it was
   * cancelled while idle, or could not be opened (noted).
   */
  async #sample(
    dueAt: (start: number) => number,
    phase: Phase,
    signal: AbortSignal | undefined,
    keepalive?: (conn: ProbeConnection) => void,
  ): Promise<Sample | undefined> {
    const s = this.#s
    const conn = s.check.open(s.target, s.connectTimeout * 1000)
    this.#pending++
    let dead = true
    try {
      try {
        await conn.ready
      } catch (err) {
        this.#notes.push(`a ${phase} connection could not be opened: ${(err as Error).message}`)
        return undefined
      }
      keepalive?.(conn)
      const start = performance.now()
      const outcome = await idleFor(() => dueAt(start), conn, signal)
      const idle = seconds(performance.now() - start)
      if (outcome === 'cancelled') return undefined
      if (outcome instanceof Death) return deadSample(idle, phase, this.#attribute(outcome, idle))
      try {
        await conn.prove(s.replyTimeout * 1000)
      } catch (err) {
        return deadSample(idle, phase, err instanceof Death ? err : new Death('reset', (err as Error).message))
      }
      dead = false
      return { idle, alive: true, how: null, phase, byServer: false }
    } finally {
      this.#pending--
      conn.close(dead)
    }
  }

  /** A close at or after the server's own declared limit is the server's (its timer runs in whole seconds). */
  #attribute(d: Death, idle: number): Death {
    const limit = this.#serverIdleLimit
    if (limit === undefined || d.byServer || d.how !== 'closed' || idle < limit - 0.5) return d
    return new Death(d.how, `${d.message}, at the server's declared limit of ${limit} s`, true)
  }

  /** A few connections with keepalive at about half the timeout, idle twice its upper bound. */
  async #keepaliveCheck(b: Bracket): Promise<KeepaliveCheck> {
    const s = this.#s
    const applier = new SocketControl({ native: s.native })
    const half = Math.max(1, Math.floor(b.low / 2))
    // Count high enough that the kernel does not give up during the check when probes are lost.
    const settings: KeepaliveSettings = { idle: half, interval: half, count: 9, userTimeout: 0 }
    let applied: KeepaliveReadback | undefined
    const setKeepalive = (conn: ProbeConnection): void => {
      const socket = conn.socket()
      if (!socket) return
      applier.apply(socket, settings)
      if (applier.native) applied = applier.read(socket)
    }
    const dueAt = (start: number): number => start + 2 * (this.#bracket ?? b).high * 1000
    const started = performance.now()
    this.#expectedEnd = Math.max(this.#expectedEnd, started + (2 * b.high + s.replyTimeout) * 1000)
    const samples = await Promise.all(
      Array.from({ length: KEEPALIVE_CONNECTIONS }, () => this.#sample(dueAt, 'keepalive', undefined, setKeepalive)),
    )
    const judged = samples.filter((x): x is Sample => x !== undefined)
    return {
      settings,
      applied,
      native: applier.native,
      samples: judged,
      holds: judged.length > 0 && judged.every((x) => x.alive),
    }
  }
}

function deadSample(idle: number, phase: Phase, d: Death): Sample {
  return { idle, alive: false, how: d.how, phase, byServer: d.byServer, detail: d.message }
}

/**
 * The path's bracket: the shortest idle a connection died of on the path, the longest below
 * it that survived, and how most of those that died went.
 */
export function bracketOf(samples: readonly Sample[]): Bracket | undefined {
  const pathDeaths = samples.filter((x) => !x.alive && !x.byServer && x.phase !== 'keepalive')
  if (pathDeaths.length === 0) return undefined
  const high = Math.min(...pathDeaths.map((x) => x.idle))
  const survived = samples.filter((x) => x.alive && x.phase !== 'keepalive' && x.idle < high)
  const low = survived.length > 0 ? Math.max(...survived.map((x) => x.idle)) : 0
  const counts = new Map<How, number>()
  for (const x of pathDeaths) counts.set(x.how!, (counts.get(x.how!) ?? 0) + 1)
  const shortest = pathDeaths.find((x) => x.idle === high)!.how!
  let how = shortest
  for (const [h, n] of counts) if (n > (counts.get(how) ?? 0)) how = h
  return { low, high, how }
}
