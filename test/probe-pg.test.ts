// `ka-proxy probe --check pg` against a real PostgreSQL on loopback (no box on the path) with
// authentication_timeout lowered to 3 s: without a login the server closes the connection
// itself after 3 s, and the probe says so (serverClosedAfter) instead of blaming the path;
// with --dsn it logs in, and the path keeps idle connections up to --max (exit 1).

import t from 'tap'
import pg from 'pg'
import { runCli } from './helpers/cli.ts'
import { postgresUnavailable, startLocalPostgres, type LocalPostgres } from '../bench/lab/postgres.ts'

const AUTH_TIMEOUT = 3
const PROBE_ARGS = ['--check', 'pg', '--max', '8', '--resolution', '1', '--reply-timeout', '2', '--json']
/** No login unless the test asks for one: PG* variables of the environment would make one. */
const NO_PG_ENV = { PGUSER: '', PGDATABASE: '', PGPASSWORD: '', PGSERVICE: '' }

const missing = await postgresUnavailable()
if (missing !== null && process.env.CI === 'true') t.fail(`CI=true and a prerequisite is missing: ${missing}`)

interface ProbeJson {
  check: string
  idleTimeout: unknown
  serverClosedAfter: number | null
  keepaliveHolds: boolean | null
  samples: Array<{ idle: number, alive: boolean, how: string | null, byServer: boolean }>
}

function probe(db: LocalPostgres, extra: string[]): { status: number | null, json: ProbeJson, stderr: string } {
  const r = runCli(['probe', '--target', `127.0.0.1:${db.port}`, ...PROBE_ARGS, ...extra], NO_PG_ENV)
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'))
  if (line === undefined) throw new Error(`probe printed no JSON (exit ${r.status}): ${r.stderr}`)
  return { status: r.status, json: JSON.parse(line) as ProbeJson, stderr: r.stderr }
}

t.test(`PostgreSQL with authentication_timeout ${AUTH_TIMEOUT} s`, { skip: missing ?? false }, async (t) => {
  const db = await startLocalPostgres()
  t.teardown(() => db.stop())
  const admin = new pg.Client({ host: '127.0.0.1', port: db.port, user: 'postgres', database: 'postgres' })
  await admin.connect()
  await admin.query(`ALTER SYSTEM SET authentication_timeout = '${AUTH_TIMEOUT}s'`)
  await admin.query('SELECT pg_reload_conf()')
  await admin.end()

  await t.test('without a login: the server closes the connection, and that is reported as its own limit', async (t) => {
    const { status, json } = probe(db, [])
    t.comment(`serverClosedAfter ${json.serverClosedAfter}, samples ${JSON.stringify(json.samples.map((s) => [s.idle, s.alive, s.how]))}`)
    t.equal(status, 0, 'exit 0: the server\'s limit was measured')
    t.equal(json.idleTimeout, null, 'not blamed on the path')
    t.ok(json.serverClosedAfter !== null && Math.abs(json.serverClosedAfter - AUTH_TIMEOUT) <= 1, `closed by the server after ${json.serverClosedAfter} s`)
    t.ok(json.samples.some((s) => !s.alive && s.how === 'closed' && s.byServer), 'samples closed by the server')
    t.ok(json.samples.some((s) => s.alive && s.idle < AUTH_TIMEOUT), 'and samples shorter than its limit alive')
    t.equal(json.keepaliveHolds, null, 'keepalive not checked: nothing on the path died')
  })

  await t.test('with --dsn: a real login, and the path keeps idle connections up to --max', async (t) => {
    const { status, json } = probe(db, ['--dsn', `postgres://postgres@localhost:1/postgres`])
    t.comment(`samples ${JSON.stringify(json.samples.map((s) => [s.idle, s.alive]))}`)
    t.equal(status, 1, 'exit 1: nothing died up to --max')
    t.equal(json.idleTimeout, null)
    t.equal(json.serverClosedAfter, null, 'a logged-in session is not closed by the server')
    t.ok(json.samples.length >= 8 && json.samples.every((s) => s.alive), 'every sample alive')
    t.ok(Math.max(...json.samples.map((s) => s.idle)) >= 7.9, 'the longest one idle --max')
  })
})
