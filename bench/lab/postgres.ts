// A real PostgreSQL in a temporary data directory removed afterwards: on the lab's server side
// (startPostgres), or on this machine's loopback for tests and benchmarks that need no namespaces
// (startLocalPostgres). PostgreSQL refuses to run as root, so as root it runs as the `postgres`
// system user, which owns the directory. Authentication is `trust`: nobody else can reach it.

import { spawn, spawnSync } from 'node:child_process'
import { appendFileSync, chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { run, sleep } from './exec.ts'
import type { Lab } from './lab.ts'
import { thaw } from './pids.ts'
import { freePort } from './ports.ts'
import { waitForListening, type Endpoint } from './ss.ts'
import { spawnScript } from './node-script.ts'
import type { LabProcess } from './process.ts'

const PG_USER = 'postgres'
const BIN_DIRS = ['/usr/lib/postgresql/17/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/15/bin']
const asRoot = process.getuid?.() === 0

export interface Postgres {
  host: string
  port: number
  user: string
  database: string
  /** Fast shutdown (SIGINT to the postmaster), waiting for it to exit. */
  stop(): Promise<void>
}

/** The directory with initdb and postgres: from PATH first, then Debian's versioned directories. */
export async function findBinDir(): Promise<string | null> {
  const onPath = await run('sh', ['-c', 'command -v initdb'], { allowFail: true })
  if (onPath.code === 0) {
    const real = await run('readlink', ['-f', onPath.stdout.trim()])
    return real.stdout.trim().replace(/\/initdb$/, '')
  }
  return BIN_DIRS.find(dir => existsSync(join(dir, 'initdb'))) ?? null
}

/** Null when PostgreSQL can run here, otherwise why not. */
export async function postgresUnavailable(): Promise<string | null> {
  if (await findBinDir() === null) return 'PostgreSQL server not installed (apt-get install -y postgresql)'
  if (!asRoot) return null
  const user = await run('id', ['-u', PG_USER], { allowFail: true })
  return user.code === 0 ? null : `running as root but no "${PG_USER}" system user to run PostgreSQL as`
}

/** initdb's arguments for a cluster in `data` whose superuser is PG_USER, without fsync. */
function initdbArgs(data: string): string[] {
  return ['-D', data, '-A', 'trust', '-U', PG_USER, '--no-sync', '--no-instructions']
}

/** The postmaster's arguments: listening on `addresses`, its Unix socket in `dir`, no fsync. */
function serverArgs(data: string, port: number, addresses: string, dir: string): string[] {
  return [
    '-D', data, '-p', String(port), '-c', `listen_addresses=${addresses}`, '-c', `unix_socket_directories=${dir}`,
    '-c', 'fsync=off', '-c', 'synchronous_commit=off'
  ]
}

export async function startPostgres(lab: Lab, port = 5432): Promise<Postgres> {
  const bin = await findBinDir()
  if (bin === null) throw new Error('PostgreSQL server not installed (apt-get install -y postgresql)')
  const dir = lab.tempDir('pg')
  const data = join(dir, 'data')
  await run('chown', [`${PG_USER}:${PG_USER}`, dir])
  chmodSync(dir, 0o700)
  await run('runuser', ['-u', PG_USER, '--', join(bin, 'initdb'), ...initdbArgs(data)])
  // Connections arrive from the NAT's address, not from localhost.
  appendFileSync(join(data, 'pg_hba.conf'), 'host all all 0.0.0.0/0 trust\n')
  const proc = lab.spawn('server', 'postgres', join(bin, 'postgres'), serverArgs(data, port, '*', dir), { user: PG_USER })
  await proc.readyWhen(waitForListening(lab.ns('server'), port, 30_000), 'listening')
  return {
    host: lab.addresses.server,
    port,
    user: PG_USER,
    database: 'postgres',
    async stop() {
      const pidFile = join(data, 'postmaster.pid')
      if (!existsSync(pidFile)) return
      const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0])
      try { process.kill(pid, 'SIGINT') } catch { return }
      const deadline = Date.now() + 10_000
      while (proc.running && Date.now() < deadline) await sleep(50)
    }
  }
}

export interface LocalPostgres {
  port: number
  /** The postmaster's pid (spawned directly, no wrapper), for SIGSTOP/SIGCONT. */
  pid: number
  socketDir: string
  /** Fast shutdown, thawing it first if it was frozen; removes its directory. */
  stop(): Promise<void>
}

/** spawn options that drop to PG_USER when running as root (the pid stays the postmaster's). */
function pgUser(): { uid?: number, gid?: number } {
  if (!asRoot) return {}
  const id = (flag: string): number => Number(spawnSync('id', [flag, PG_USER], { encoding: 'utf8' }).stdout.trim())
  return { uid: id('-u'), gid: id('-g') }
}

/** A PostgreSQL on 127.0.0.1 on a free port, in the current namespace. */
export async function startLocalPostgres(): Promise<LocalPostgres> {
  const bin = await findBinDir()
  if (bin === null) throw new Error('PostgreSQL server not installed (apt-get install -y postgresql)')
  const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-pg-'))
  chmodSync(dir, 0o755)
  if (asRoot) await run('chown', [`${PG_USER}:${PG_USER}`, dir])
  const data = join(dir, 'data')
  const user = pgUser()
  const init = spawnSync(join(bin, 'initdb'), initdbArgs(data), { encoding: 'utf8', cwd: dir, ...user })
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`)
  const port = await freePort()
  const proc = spawn(join(bin, 'postgres'), serverArgs(data, port, '127.0.0.1', dir), { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir, ...user })
  let log = ''
  proc.stderr.on('data', (c: Buffer) => (log += c.toString()))
  const deadline = Date.now() + 30_000
  while (!/ready to accept connections/.test(log)) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`postgres did not start: ${log}`)
    await sleep(50)
  }
  return {
    port,
    pid: proc.pid!,
    socketDir: dir,
    async stop() {
      if (proc.exitCode === null) {
        thaw(proc.pid!)
        proc.kill('SIGINT')
        await new Promise(resolve => proc.once('exit', resolve))
      }
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

export interface IdleQueryResult {
  /** SELECT 1 right after connecting worked. */
  first: boolean
  /** SELECT 1 after the idle time worked. */
  afterIdle: boolean
  error?: string
}

/**
 * A PostgreSQL client in the client namespace connects to `to`, runs SELECT 1, stays idle
 * `idleSeconds`, and runs it again with `queryTimeoutMs` to answer: what a connection pool sees.
 */
export async function idleQuery(lab: Lab, to: Endpoint, idleSeconds: number, queryTimeoutMs: number): Promise<IdleQueryResult> {
  const proc = spawnScript(lab, 'client', 'pg-client.ts', [to.host, String(to.port), String(idleSeconds), String(queryTimeoutMs)])
  await proc.exited
  const steps = proc.lines.flatMap(line => {
    try { return [JSON.parse(line) as { step: string, ok: boolean, error?: string }] } catch { return [] }
  })
  const step = (name: string): { ok: boolean, error?: string } | undefined => steps.find(s => s.step === name)
  const error = step('after-idle')?.error ?? step('first')?.error ?? (steps.length === 0 ? proc.stderr.trim().slice(-500) : undefined)
  return {
    first: step('first')?.ok === true,
    afterIdle: step('after-idle')?.ok === true,
    ...(error === undefined ? {} : { error })
  }
}

export interface PgAnswer {
  /** pg_backend_pid(), or null: no answer (an error, or none within the timeout). */
  pid: number | null
  /** Milliseconds from the question to the answer or the failure. */
  ms: number
  /** When the answer or the failure came (ms since epoch). */
  at: number
  error?: string
}

/** Idle PostgreSQL sessions held by an app in the client namespace (bench/lab/pg-sessions.ts). */
export class PgSessions {
  readonly proc: LabProcess
  /** Each session's backend pid once connected. */
  readonly pids: number[]

  constructor(proc: LabProcess, pids: number[]) {
    this.proc = proc
    this.pids = pids
  }

  /** SELECT pg_backend_pid() on every session at once, each waiting at most `timeoutMs`. */
  async query(timeoutMs: number): Promise<PgAnswer[]> {
    const mark = this.proc.lines.length
    this.proc.child.stdin?.write(`query ${timeoutMs}\n`)
    const line = await this.proc.waitForLine(l => this.proc.lines.indexOf(l) >= mark && l.includes('"answers"'), timeoutMs + 10_000, 'answers')
    return (JSON.parse(line) as { answers: PgAnswer[] }).answers
  }
}

/** Opens `count` sessions to `to` from the client namespace and keeps them open, idle. */
export async function holdPgSessions(lab: Lab, to: Endpoint, count: number): Promise<PgSessions> {
  const proc = spawnScript(lab, 'client', 'pg-sessions.ts', [to.host, String(to.port), String(count)])
  const ready = await proc.waitForLine(l => l.includes('"ready"'), 30_000, 'ready')
  return new PgSessions(proc, (JSON.parse(ready) as { pids: number[] }).pids)
}
