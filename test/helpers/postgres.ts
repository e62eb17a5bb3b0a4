// A real PostgreSQL on loopback, in a temporary directory removed afterwards. PostgreSQL
// refuses to run as root, so as root it runs as the `postgres` system user.

import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { findBinDir } from '../../bench/lab/postgres.ts'
import { freePort } from './net.ts'
import { thaw } from './freeze.ts'

export interface LocalPostgres {
  port: number
  /** The postmaster's pid (spawned directly, no wrapper), for SIGSTOP/SIGCONT. */
  pid: number
  socketDir: string
  stop(): Promise<void>
}

const asRoot = process.getuid?.() === 0

/** Null when a PostgreSQL server can be started here, else why not. */
export async function postgresMissing(): Promise<string | null> {
  if ((await findBinDir()) === null) return 'PostgreSQL server binaries not found (apt-get install -y postgresql)'
  if (asRoot && spawnSync('id', ['-u', 'postgres']).status !== 0) return 'running as root but no "postgres" user'
  return null
}

/** spawn options that drop to the `postgres` user when running as root. */
function pgUser(): { uid?: number; gid?: number } {
  if (!asRoot) return {}
  const id = (flag: string): number => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim())
  return { uid: id('-u'), gid: id('-g') }
}

export async function startLocalPostgres(): Promise<LocalPostgres> {
  const bin = (await findBinDir())!
  const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-pg-'))
  chmodSync(dir, 0o755)
  if (asRoot) spawnSync('chown', ['postgres:postgres', dir])
  const data = join(dir, 'data')
  const user = pgUser()
  const init = spawnSync(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '--no-instructions'], { encoding: 'utf8', cwd: dir, ...user })
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`)
  const port = await freePort()
  const proc = spawn(join(bin, 'postgres'), [
    '-D', data, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${dir}`,
    '-c', 'fsync=off', '-c', 'synchronous_commit=off',
  ], { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir, ...user })
  let log = ''
  proc.stderr!.on('data', (c: Buffer) => (log += c.toString()))
  const deadline = Date.now() + 30_000
  while (!/ready to accept connections/.test(log)) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`postgres did not start: ${log}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    port,
    pid: proc.pid!,
    socketDir: dir,
    async stop() {
      if (proc.exitCode === null) {
        thaw(proc.pid!)
        proc.kill('SIGINT')
        await new Promise((r) => proc.once('exit', r))
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
