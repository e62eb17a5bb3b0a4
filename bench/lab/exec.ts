// Running commands for the lab: short ones to completion, and the argument lists that put a
// command inside a namespace. Everything goes through `ip netns exec` so a reader can copy a
// command from here into a shell and see the same thing.

import { execFile, spawnSync } from 'node:child_process'

export interface RunResult {
  code: number
  stdout: string
  stderr: string
}

export interface RunOptions {
  /** Resolve with the result instead of rejecting when the command exits non-zero. */
  allowFail?: boolean
  input?: string
}

/** The argument list that runs `cmd args` inside network namespace `ns`. */
export function inNetns(ns: string, cmd: string, args: readonly string[]): [string, string[]] {
  return ['ip', ['netns', 'exec', ns, cmd, ...args]]
}

/**
 * Runs a command to completion. It rejects with the command line and its stderr when the
 * command fails, because a half-built lab gives wrong numbers that look right.
 */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1
      const result = { code, stdout, stderr }
      if (code !== 0 && opts.allowFail !== true) {
        reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.trim() || stdout.trim()}`))
        return
      }
      resolve(result)
    })
    if (opts.input !== undefined) child.stdin?.end(opts.input)
  })
}

/** `run` inside a namespace. */
export function runIn(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [c, a] = inNetns(ns, cmd, args)
  return run(c, a, opts)
}

/**
 * Synchronous variant for exit and signal handlers, where the event loop will not run again.
 * Never throws: cleanup must go on with the next step whatever this one did.
 */
export function runSync(cmd: string, args: readonly string[]): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 })
  return { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' }
}

export function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}
