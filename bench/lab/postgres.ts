// A real PostgreSQL on the server side, in a temporary data directory removed with the lab.
// PostgreSQL refuses to run as root, so it runs as the `postgres` system user, which owns the
// directory. Authentication is `trust`: the lab is a closed network of our own namespaces.

import { appendFileSync, chmodSync, existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { run, sleep } from './exec.ts'
import type { Lab } from './lab.ts'
import { waitForListening } from './ss.ts'

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
async function findBinDir (): Promise<string | null> {
  const onPath = await run('sh', ['-c', 'command -v initdb'], { allowFail: true })
  if (onPath.code === 0) {
    const real = await run('readlink', ['-f', onPath.stdout.trim()])
    return real.stdout.trim().replace(/\/initdb$/, '')
  }
  return BIN_DIRS.find(dir => existsSync(join(dir, 'initdb'))) ?? null
}

/** Null when PostgreSQL can run here, otherwise why not. */
export async function postgresUnavailable (): Promise<string | null> {
  if (await findBinDir() === null) return 'PostgreSQL server not installed (apt-get install -y postgresql)'
  const user = await run('id', ['-u', PG_USER], { allowFail: true })
  return user.code === 0 ? null : `no "${PG_USER}" system user to run PostgreSQL as`
}

export async function startPostgres (lab: Lab, port = 5432): Promise<Postgres> {
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
    async stop () {
      const pidFile = join(data, 'postmaster.pid')
      if (!existsSync(pidFile)) return
      const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0])
      try { process.kill(pid, 'SIGINT') } catch { return }
      const deadline = Date.now() + 10_000
      while (proc.running && Date.now() < deadline) await sleep(50)
    }
  }
}
