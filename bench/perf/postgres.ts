// The real client case: a PostgreSQL started for the bench (on the load core, with the bench's
// own pinning inherited), its pgbench tables created once, and pgbench run through a relay.

import { postgresUnavailable, startLocalPostgres, type LocalPostgres } from '../lab/postgres.ts'
import { run } from '../lab/exec.ts'
import type { Endpoint } from '../lab/ss.ts'

export interface PgbenchResult {
  tps: number
  latencyMs: number
  transactions: number
  failed: number
}

const PG = { user: 'postgres', database: 'postgres' }

export async function pgbenchUnavailable(): Promise<string | null> {
  const pgbench = await run('pgbench', ['--version'], { allowFail: true }).catch(() => null)
  if (pgbench === null || pgbench.code !== 0) return 'pgbench not installed (apt-get install -y postgresql-contrib)'
  return await postgresUnavailable()
}

function connection(to: Endpoint): string[] {
  return ['-h', to.host, '-p', String(to.port), '-U', PG.user]
}

/** Starts PostgreSQL and creates pgbench's tables (scale 1) on it. */
export async function startBenchPostgres(): Promise<{ server: LocalPostgres, endpoint: Endpoint }> {
  const server = await startLocalPostgres()
  const endpoint = { host: '127.0.0.1', port: server.port }
  try {
    await run('pgbench', ['-i', '-q', '-s', '1', ...connection(endpoint), PG.database])
  } catch (err) {
    await server.stop()
    throw err
  }
  return { server, endpoint }
}

function field(output: string, pattern: RegExp, what: string): number {
  const m = pattern.exec(output)
  if (m === null) throw new Error(`pgbench output has no ${what}:\n${output.slice(-1500)}`)
  return Number(m[1])
}

/** `pgbench -S -n -c clients -T seconds` against `to`; select-only, no vacuum before. */
export async function pgbench(to: Endpoint, clients: number, seconds: number): Promise<PgbenchResult> {
  const r = await run('pgbench', ['-S', '-n', '-c', String(clients), '-T', String(seconds), ...connection(to), PG.database])
  const out = r.stdout
  return {
    tps: field(out, /^tps = ([\d.]+)/m, 'tps'),
    latencyMs: field(out, /^latency average = ([\d.]+) ms/m, 'latency average'),
    transactions: field(out, /^number of transactions actually processed: (\d+)/m, 'transaction count'),
    failed: Number(/^number of failed transactions: (\d+)/m.exec(out)?.[1] ?? 0)
  }
}
