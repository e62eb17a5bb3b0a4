// A long-running process inside a lab namespace (a relay, the echo server, the client driver,
// PostgreSQL), with its stdout split into lines so callers can wait for "listening" or parse
// JSON events. Every process is registered with the cleanup so none outlives the lab.

import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { EventEmitter } from 'node:events'
import { inNetns } from './exec.ts'

export interface SpawnOptions {
  /** Extra environment for the process. */
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Run as this system user (PostgreSQL refuses to run as root). */
  user?: string
}

const STDERR_KEPT = 8192

export class LabProcess extends EventEmitter {
  readonly name: string
  readonly child: ChildProcess
  readonly lines: string[] = []
  stderr = ''
  readonly exited: Promise<number | null>
  private exitCode: number | null | undefined

  constructor(name: string, child: ChildProcess) {
    super()
    this.name = name
    this.child = child
    this.exited = new Promise(resolve => {
      child.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal === null ? null : -1)
        this.emit('exit', this.exitCode)
        resolve(this.exitCode)
      })
    })
    // A failed spawn emits 'error' and no 'exit'; record it as an exit so waiters wake up.
    child.once('error', err => {
      this.stderr += `\nspawn error: ${err.message}`
      this.exitCode = -1
      this.emit('exit', -1)
    })
    if (child.stdout !== null) {
      createInterface({ input: child.stdout }).on('line', line => {
        this.lines.push(line)
        this.emit('line', line)
      })
    }
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-STDERR_KEPT)
    })
  }

  get pid(): number {
    return this.child.pid ?? -1
  }

  get running(): boolean {
    return this.exitCode === undefined
  }

  /** Resolves with the first stdout line (seen so far or to come) that `match` accepts. */
  waitForLine(match: (line: string) => boolean, timeoutMs: number, what = 'line'): Promise<string> {
    const seen = this.lines.find(match)
    if (seen !== undefined) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const onLine = (line: string): void => {
        if (!match(line)) return
        done()
        resolve(line)
      }
      const onExit = (code: number | null): void => {
        done()
        reject(new Error(`${this.name} exited (${code}) before ${what}: ${this.stderr.trim().slice(-2000)}`))
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms; stderr: ${this.stderr.trim().slice(-2000)}`))
      }, timeoutMs)
      const done = (): void => {
        clearTimeout(timer)
        this.off('line', onLine)
        this.off('exit', onExit)
      }
      this.on('line', onLine)
      this.on('exit', onExit)
    })
  }

  /**
   * Resolves as `ready` does, or rejects if the process exits first: for programs that do not
   * say when they are ready, only start listening.
   */
  readyWhen<T>(ready: Promise<T>, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null): void => {
        reject(new Error(`${this.name} exited (${code}) before ${what}: ${this.stderr.trim().slice(-2000)}`))
      }
      if (!this.running) {
        onExit(this.exitCode ?? null)
        return
      }
      this.once('exit', onExit)
      ready.then(
        value => { this.off('exit', onExit); resolve(value) },
        (err: unknown) => { this.off('exit', onExit); reject(err) }
      )
    })
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running && this.pid > 0) {
      try { process.kill(this.pid, sig) } catch { /* already gone */ }
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 3000): Promise<number | null> {
    if (!this.running) return this.exitCode ?? null
    this.signal('SIGTERM')
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs)
    try {
      return await this.exited
    } finally {
      clearTimeout(timer)
    }
  }
}

/**
 * The environment of lab processes. NODE_OPTIONS is dropped: a test runner puts its
 * instrumentation there, and relays must run as they do in production.
 */
function labEnv(extra: NodeJS.ProcessEnv | undefined): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra }
  delete env.NODE_OPTIONS
  return env
}

/**
 * Starts `cmd args` inside namespace `ns`. `ip netns exec` replaces itself with the command,
 * so the child's pid is the command's pid and signals reach it directly; `runuser` does not,
 * which is why processes run as another user are stopped through their own tools.
 */
export function spawnIn(ns: string, name: string, cmd: string, args: readonly string[], opts: SpawnOptions = {}): LabProcess {
  const full: [string, string[]] = opts.user === undefined
    ? [cmd, [...args]]
    : ['runuser', ['-u', opts.user, '--', cmd, ...args]]
  const [c, a] = inNetns(ns, full[0], full[1])
  const child = spawn(c, a, {
    cwd: opts.cwd,
    env: labEnv(opts.env),
    stdio: ['pipe', 'pipe', 'pipe']
  })
  return new LabProcess(name, child)
}
