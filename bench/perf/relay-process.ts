// A relay as a running process of the bench: started pinned, in its own process group (so a
// relay that forks per session is stopped as a whole), with its output kept in a log file that
// is shown when it fails. Ready when its port is listening.

import { spawn, type ChildProcess } from 'node:child_process'
import { openSync, closeSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { sleep } from '../lab/exec.ts'
import { pinnedCommand } from './cpus.ts'
import { isListening } from './procfs.ts'

export interface RelayCommand {
  cmd: string
  args: string[]
  cwd?: string
}

export interface RelayProcess {
  pid: number
  /** Its stdout and stderr (and those of any process it starts, such as an upgrade's new one). */
  logPath: string
  /** Milliseconds from spawn until its port listened (polled every POLL_MS). */
  startMs: number
  /** Resolves with its exit code (null when killed by a signal) once this process has exited. */
  exited: Promise<number | null>
  stop(): Promise<void>
}

const START_TIMEOUT_MS = 30_000
const STOP_GRACE_MS = 5_000
/** Fine enough for a start time of a few hundred milliseconds. */
const POLL_MS = 5

function exited(child: ChildProcess): Promise<number | null> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve(child.exitCode)
    : new Promise(resolve => child.once('exit', code => resolve(code)))
}

function killGroup(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pid, signal)
    return true
  } catch {
    return false  // no process left in the group
  }
}

/** Where a relay's output goes: one file per relay, each run appended. */
export function relayLogPath(name: string, dir: string): string {
  return join(dir, `${name.replace(/[^\w.-]/g, '_')}.log`)
}

/** Starts `command` on `cpu` and resolves once something listens on `port`. */
export async function startRelayProcess(name: string, command: RelayCommand, cpu: number | null, port: number, dir: string): Promise<RelayProcess> {
  const logPath = relayLogPath(name, dir)
  const log = openSync(logPath, 'a')
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const [cmd, args] = pinnedCommand(cpu, command.cmd, command.args)
  const spawnedAt = performance.now()
  const child = spawn(cmd, args, { cwd: command.cwd, env, detached: true, stdio: ['ignore', log, log] })
  closeSync(log)
  const gone = exited(child)
  const failure = (why: string): Error =>
    new Error(`${name} ${why}; its output (${logPath}):\n${readFileSync(logPath, 'utf8').trim().slice(-2000)}`)
  const deadline = Date.now() + START_TIMEOUT_MS
  while (!isListening(port)) {
    if (child.exitCode !== null || child.signalCode !== null) throw failure(`exited (${child.exitCode ?? child.signalCode}) before listening`)
    if (Date.now() > deadline) {
      killGroup(child.pid!, 'SIGKILL')
      throw failure(`did not listen on port ${port} within ${START_TIMEOUT_MS / 1000} s`)
    }
    await sleep(POLL_MS)
  }
  const startMs = performance.now() - spawnedAt
  const pid = child.pid!
  return {
    pid,
    logPath,
    startMs,
    exited: gone,
    async stop() {
      killGroup(pid, 'SIGTERM')
      const timer = setTimeout(() => killGroup(pid, 'SIGKILL'), STOP_GRACE_MS)
      await gone
      clearTimeout(timer)
      // Forked children that outlived their parent go with the group; wait until all are gone,
      // so the next measurement does not share the CPU with thousands of exiting processes.
      killGroup(pid, 'SIGKILL')
      const deadline = Date.now() + STOP_GRACE_MS
      while (killGroup(pid, 0) && Date.now() < deadline) await sleep(20)
    }
  }
}
