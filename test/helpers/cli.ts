// Runs the real ka-proxy command (src/main.ts through tsx) as a child process and reads
// its JSON log lines.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { LogLine } from './proxy.ts'

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url))
const NODE_ARGS = ['--import', 'tsx', MAIN]

/** Where the command runs from: this checkout, or (`main`, `cwd`) a copy of it elsewhere. */
export interface Entry {
  main: string
  cwd: string
  /** Node flags before the entry point (--max-old-space-size=...). */
  nodeFlags?: string[]
}

const nodeArgs = (entry: Entry | undefined): string[] => (entry === undefined ? NODE_ARGS : [...(entry.nodeFlags ?? []), '--import', 'tsx', entry.main])

export interface RunResult {
  status: number | null
  stdout: string
  stderr: string
}

/** Runs ka-proxy to completion (for commands that exit by themselves). */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, entry?: Entry): RunResult {
  const r = spawnSync(process.execPath, [...nodeArgs(entry), ...args], {
    encoding: 'utf8',
    cwd: entry?.cwd,
    env: { ...process.env, ...env },
    timeout: 20_000,
  })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** runCli without blocking: several can run at once. */
export function runCliAsync(args: string[], env: NodeJS.ProcessEnv = {}, entry?: Entry): Promise<RunResult> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [...nodeArgs(entry), ...args], {
      cwd: entry?.cwd,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 20_000,
    })
    let stdout = ''
    let stderr = ''
    proc.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s))
    proc.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    proc.on('close', (status) => resolve({ status, stdout, stderr }))
  })
}

export interface RunningProxy {
  proc: ChildProcess
  logs: LogLine[]
  /** Resolves with the first log line (already seen or to come) that `match` accepts. */
  line(match: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>
  exited: Promise<number | null>
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

/** `wrapper`: a command to run it under, such as `['prlimit', '--nofile=100:100']`. */
export function spawnProxy(args: string[], env: NodeJS.ProcessEnv = {}, entry?: Entry, wrapper: string[] = []): RunningProxy {
  const command = [...wrapper, process.execPath, ...nodeArgs(entry), '--log-format', 'json', '--log-level', 'debug', ...args]
  const proc = spawn(command[0]!, command.slice(1), {
    cwd: entry?.cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const logs: LogLine[] = []
  const waiters = new Set<() => void>()
  /** Its output ended (it exited): no line will come any more. */
  let ended = false
  const lines = createInterface({ input: proc.stdout! })
  lines.on('line', (text) => {
    try {
      logs.push(JSON.parse(text) as LogLine)
    } catch {
      logs.push({ msg: text, level: 0 })
    }
    for (const w of waiters) w()
  })
  lines.on('close', () => {
    ended = true
    for (const w of waiters) w()
  })
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  return {
    proc,
    logs,
    exited,
    line(match, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = logs.find(match)
          if (found || ended) {
            waiters.delete(check)
            clearTimeout(timer)
            // Gone without it: said at once, not after the timeout (its stderr says why).
            if (found) resolve(found)
            else reject(new Error(`no matching log line: the proxy's output ended (it exited); got: ${logs.map((l) => l.msg).join(' | ')}`))
          }
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`no matching log line within ${timeoutMs} ms; got: ${logs.map((l) => l.msg).join(' | ')}`))
        }, timeoutMs)
        waiters.add(check)
        check()
      })
    },
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal)
      return exited
    },
  }
}

/** Starts ka-proxy on a kernel-chosen port and waits until it listens. */
export async function startCliProxy(args: string[], env: NodeJS.ProcessEnv = {}, entry?: Entry, wrapper: string[] = []): Promise<RunningProxy & { port: number }> {
  const running = spawnProxy(['--listen', '127.0.0.1:0', ...args], env, entry, wrapper)
  // Generous: starting through tsx on a loaded 2-core machine can take many seconds.
  const listening = await running.line((l) => l.msg === 'listening', 30_000)
  const port = Number(String(listening.address).split(':').pop())
  return Object.assign(running, { port })
}
