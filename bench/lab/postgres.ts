// A real PostgreSQL on the server side, in a temporary data directory removed with the lab.
// PostgreSQL refuses to run as root, so it runs as the `postgres` system user, which owns the
// directory. Authentication is `trust`: the lab is a closed network of our own namespaces.

import { appendFileSync, chmodSync, existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { run, sleep } from './exec.ts'
import type { Lab } from './lab.ts'
import { waitForListening, type Endpoint } from './ss.ts'
import { spawnScript } from './node-script.ts'

const PG_USER = 'postgres'
const BIN_DIRS = ['/usr/lib/postgresql/17/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/15/bin']

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
  const user = await run('id', ['-u', PG_USER], { allowFail: true })
  return user.code === 0 ? null : `no "${PG_USER}" system user to run PostgreSQL as`
}

export async function startPostgres(lab: Lab, port = 5432): Promise<Postgres> {
  const bin = await findBinDir()
  if (bin === null) throw new Error('PostgreSQL server not installed (apt-get install -y postgresql)')
  const dir = lab.tempDir('pg')
  const data = join(dir, 'data')
  await run('chown', [`${PG_USER}:${PG_USER}`, dir])
  chmodSync(dir, 0o700)
  await run('runuser', ['-u', PG_USER, '--', join(bin, 'initdb'), '-D', data, '-A', 'trust', '-U', PG_USER, '--no-sync', '--no-instructions'])
  // Connections arrive from the NAT's address, not from localhost.
  appendFileSync(join(data, 'pg_hba.conf'), 'host all all 0.0.0.0/0 trust\n')
  const proc = lab.spawn('server', 'postgres', join(bin, 'postgres'), [
    '-D', data, '-p', String(port), '-c', 'listen_addresses=*', '-c', `unix_socket_directories=${dir}`,
    '-c', 'fsync=off', '-c', 'synchronous_commit=off'
  ], { user: PG_USER })
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
