// The load generator (loadgen.c), compiled at bench time with the machine's C compiler, and typed
// wrappers for its modes. Its processes inherit the bench's CPU (the load core).

import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { run } from '../lab/exec.ts'
import type { Endpoint } from '../lab/ss.ts'

const SOURCE = fileURLToPath(new URL('loadgen.c', import.meta.url))

export interface BulkResult { streams: number, bytes: number, received: number, seconds: number, errors: number, cpuSeconds: number }
export interface RrResult {
  conns: number, size: number, roundTrips: number, seconds: number,
  /** Round trips including the warm-up: the work the relay was charged CPU for. */
  allRoundTrips: number,
  p50us: number, p99us: number, p999us: number, maxus: number, errors: number, cpuSeconds: number
}
export interface OpenResult { opened: number, failed: number, seconds: number, cpuSeconds: number }
export interface CheckResult { checked: number, ok: number, failed: number }
/** Round trips of one ping-pong session around a span of time: before it, and overlapping it. */
export interface TraceResult {
  size: number, roundTrips: number, before: number, during: number, after: number,
  p50BeforeUs: number, maxBeforeUs: number,
  /**
   * The longest round trip that overlapped the span; one in flight at the stop gets 5 s more,
   * then counts as unanswered, to then.
   */
  longestDuringUs: number,
  /** When that round trip started, from the span's start (negative: before it). */
  longestFromMs: number,
  unanswered: number, errors: number
}
/** Busy sessions to the echo: bytes sent, bytes back (each checked against what was sent). */
export interface StreamResult {
  conns: number, sent: number, received: number, seconds: number,
  /** Sessions that ended (EOF, reset, error); that had a byte come back wrong; that did not get all back. */
  failed: number, mismatched: number, short: number,
  /** The longest time a session waited for its echo while bytes were outstanding. */
  longestGapUs: number
}

export interface Servers {
  sink: Endpoint
  echo: Endpoint
  source: Endpoint
  pid: number
  stop(): Promise<void>
}

/** Sessions held open by the `open` mode until `close()` resets them all. */
export interface HeldSessions {
  result: OpenResult
  /** One 1-byte echo on every held session again: how many still answer. */
  check(): Promise<CheckResult>
  close(): Promise<void>
}

/** The `trace` client, running until `stop` gives it the span to report on. */
export interface Trace {
  stop(from: bigint, until: bigint): Promise<TraceResult>
}

/** The `stream` clients, running until `stop` (then they take back what is outstanding). */
export interface Streams {
  stop(): Promise<StreamResult>
}

/** Null when a C compiler is installed, otherwise why the bench cannot run. */
export async function compilerUnavailable(): Promise<string | null> {
  const cc = await run('cc', ['--version'], { allowFail: true }).catch(() => null)
  return cc === null || cc.code !== 0 ? 'no C compiler for the load generator (apt-get install -y gcc)' : null
}

/** A child's stdout as JSON objects, one per line, in order. */
class JsonLines {
  readonly #queue: unknown[] = []
  readonly #waiting: Array<(v: unknown) => void> = []
  #stderr = ''
  readonly #exit: Promise<number | null>

  constructor(readonly child: ChildProcess, readonly what: string) {
    createInterface({ input: child.stdout! }).on('line', line => {
      const value: unknown = line.startsWith('{') ? JSON.parse(line) : line
      const waiter = this.#waiting.shift()
      if (waiter) waiter(value)
      else this.#queue.push(value)
    })
    child.stderr!.on('data', (c: Buffer) => { this.#stderr += c.toString() })
    // 'close', not 'exit': 'exit' may come before the last lines on stdout were read, and a
    // loadgen that printed its result and exited was then taken for one that died silently.
    this.#exit = new Promise(resolve => child.once('close', code => resolve(code)))
  }

  /**
   * The next line, or an error naming the mode and its stderr if it exits first. After
   * `timeoutMs` the process is killed: a relay that stalls must not stall the bench.
   */
  async next<T>(timeoutMs: number): Promise<T> {
    if (this.#queue.length > 0) return this.#queue.shift() as T
    const line = new Promise<unknown>(resolve => this.#waiting.push(resolve))
    const timer = setTimeout(() => {
      this.#stderr += `\nno answer within ${timeoutMs / 1000} s`
      this.child.kill('SIGKILL')
    }, timeoutMs)
    const value = await Promise.race([line, this.#exit.then(code => ({ exited: code }))]).finally(() => clearTimeout(timer))
    if (typeof value === 'object' && value !== null && 'exited' in value) {
      throw new Error(`loadgen ${this.what} exited (${String(value.exited)}): ${this.#stderr.trim().slice(-1000)}`)
    }
    return value as T
  }

  exited(): Promise<number | null> {
    return this.#exit
  }
}

/** Time allowed for setup and teardown around a mode's own duration. */
const SLACK_MS = 60_000
/** The slowest throughput a bulk run is given time for. */
const SLOWEST_BYTES_PER_MS = 10_000

export class LoadGenerator {
  private constructor(readonly path: string) {}

  /** Compiles loadgen.c into `dir`. */
  static async build(dir: string): Promise<LoadGenerator> {
    const path = join(dir, 'loadgen')
    await run('cc', ['-O2', '-Wall', '-o', path, SOURCE])
    return new LoadGenerator(path)
  }

  #start(mode: string, args: Array<string | number>): JsonLines {
    const child = spawn(this.path, [mode, ...args.map(String)], { stdio: ['pipe', 'pipe', 'pipe'] })
    return new JsonLines(child, mode)
  }

  async startServers(): Promise<Servers> {
    const lines = this.#start('serve', [])
    const ready = await lines.next<string>(SLACK_MS)
    const m = /^ready (\d+) (\d+) (\d+)$/.exec(ready)
    if (m === null) throw new Error(`loadgen serve: unexpected "${ready}"`)
    const child = lines.child
    return {
      sink: { host: '127.0.0.1', port: Number(m[1]) },
      echo: { host: '127.0.0.1', port: Number(m[2]) },
      source: { host: '127.0.0.1', port: Number(m[3]) },
      pid: child.pid!,
      async stop() {
        child.kill('SIGTERM')
        await lines.exited()
      }
    }
  }

  /** `up`: to the sink, client to server; `down`: from the source, server to client. */
  async bulk(to: Endpoint, streams: number, bytes: number, direction: 'up' | 'down'): Promise<BulkResult> {
    const mode = direction === 'up' ? 'bulk' : 'down'
    return await this.#start(mode, [to.host, to.port, streams, bytes]).next<BulkResult>(SLACK_MS + bytes / SLOWEST_BYTES_PER_MS)
  }

  async rr(to: Endpoint, conns: number, size: number, warmup: number, seconds: number): Promise<RrResult> {
    return await this.#start('rr', [to.host, to.port, conns, size, warmup, seconds]).next<RrResult>(SLACK_MS + (warmup + seconds) * 1000)
  }

  /**
   * A `size`-byte ping-pong session, every round trip timed, until `stop(from, to)`: two
   * process.hrtime.bigint() values, CLOCK_MONOTONIC as the generator's own clock.
   */
  trace(to: Endpoint, size: number): Trace {
    const lines = this.#start('trace', [to.host, to.port, size])
    return {
      async stop(from: bigint, until: bigint) {
        lines.child.stdin!.end(`stop ${from} ${until}\n`)
        return await lines.next<TraceResult>(SLACK_MS)
      }
    }
  }

  /** `conns` busy sessions, each sending `bytesPerSecond` to the echo and checking what comes back. */
  stream(to: Endpoint, conns: number, bytesPerSecond: number): Streams {
    const lines = this.#start('stream', [to.host, to.port, conns, bytesPerSecond])
    return {
      async stop() {
        lines.child.stdin!.end('stop\n')
        return await lines.next<StreamResult>(SLACK_MS)
      }
    }
  }

  async open(to: Endpoint, count: number, window: number): Promise<HeldSessions> {
    const lines = this.#start('open', [to.host, to.port, count, window])
    const result = await lines.next<OpenResult>(SLACK_MS)
    return {
      result,
      async check() {
        lines.child.stdin!.write('check\n')
        return await lines.next<CheckResult>(SLACK_MS)
      },
      async close() {
        lines.child.stdin!.end('close\n')
        await lines.next(SLACK_MS)
        await lines.exited()
      }
    }
  }
}
