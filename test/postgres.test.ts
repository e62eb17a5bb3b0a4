// ka-proxy in front of a real PostgreSQL 15, used by real clients (pg and psql), including
// a connection that stays idle and is used again, as a pool does.

import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import pg from 'pg'
import { startCliProxy } from './helpers/cli.ts'
import { postgresUnavailable, startLocalPostgres } from '../bench/lab/postgres.ts'
import { sleep } from './helpers/net.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'

const missing = await postgresUnavailable()
if (missingPrerequisite(missing)) {
  t.pass(`skipped: PostgreSQL tests need a server: ${missing}`, { skip: true })
} else {
  const db = await startLocalPostgres()
  t.teardown(() => db.stop())
  const proxy = await startCliProxy(['--target', `127.0.0.1:${db.port}`, '--idle', '60'])
  t.teardown(() => proxy.stop('SIGKILL'))
  const connectThroughProxy = async (): Promise<pg.Client> => {
    const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'postgres', database: 'postgres' })
    await client.connect()
    return client
  }

  t.test('queries through the proxy with the pg client', async (t) => {
    const client = await connectThroughProxy()
    await client.query('CREATE TABLE items (id int PRIMARY KEY, body text)')
    const body = 'x'.repeat(100_000)
    for (let i = 0; i < 50; i++) await client.query('INSERT INTO items VALUES ($1, $2)', [i, body + i])
    const { rows } = await client.query('SELECT count(*)::int AS n, sum(length(body))::int AS len FROM items')
    t.same(rows[0], { n: 50, len: 50 * 100_000 + 10 * 1 + 40 * 2 })
    await client.end()
    const line = await proxy.line((l) => l.msg === 'session closed')
    // end() sends Terminate and then the client's FIN; the server closes on Terminate. The
    // client's FIN is normally first at the proxy (client_end), the server's may pass it (CI once
    // logged target_end): both are a normal end with a FIN each way.
    t.match(line, { reason: /^(client_end|target_end)$/, clientClose: 'fin', targetClose: 'fin', target: `127.0.0.1:${db.port}` })
    t.ok((line.bytesToTarget as number) > 5_000_000, 'the inserted bytes crossed the proxy')
  })

  t.test('an idle connection is used again', async (t) => {
    const client = await connectThroughProxy()
    const before = await client.query('SELECT pg_backend_pid() AS pid')
    // Both legs carry keepalive timers while idle.
    await sleep(500)
    // The proxy process's own established sockets: one client leg, one target leg.
    const legs = execFileSync('ss', ['-Htnop', 'state', 'established', `( sport = :${proxy.port} or dport = :${db.port} )`], { encoding: 'utf8', maxBuffer: 64 << 20 })
      .split('\n')
      .filter((l) => l.includes(`pid=${proxy.proc.pid},`))
    const clientLeg = legs.filter((l) => l.includes(`127.0.0.1:${proxy.port} `))
    const targetLeg = legs.filter((l) => l.includes(` 127.0.0.1:${db.port} `))
    t.equal(clientLeg.length, 1, 'one client leg')
    t.equal(targetLeg.length, 1, 'one target leg')
    t.match(clientLeg[0], /timer:\(keepalive,/, 'ss: keepalive timer on the client leg')
    t.match(targetLeg[0], /timer:\(keepalive,/, 'ss: keepalive timer on the target leg')
    await sleep(2500)
    const after = await client.query('SELECT pg_backend_pid() AS pid, 42 AS answer')
    t.equal(after.rows[0].answer, 42)
    t.equal(after.rows[0].pid, before.rows[0].pid, 'same server session after the idle period')
    await client.end()
  })

  t.test('psql through the proxy', async (t) => {
    const r = spawnSync('psql', ['-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'postgres', '-d', 'postgres', '-Atc', 'SELECT 6 * 7'], { encoding: 'utf8', timeout: 15_000 })
    t.equal(r.status, 0, r.stderr)
    t.equal(r.stdout.trim(), '42')
  })

  t.test('a backend killed on the server: the client gets an error, not a hang', async (t) => {
    const victim = await connectThroughProxy()
    const errors: Error[] = []
    victim.on('error', (e) => errors.push(e))
    const { rows } = await victim.query('SELECT pg_backend_pid() AS pid')
    // Read while the socket is open: once the server has ended it, localPort is gone.
    const victimAddress = `127.0.0.1:${(victim as unknown as { connection: { stream: { localPort: number } } }).connection.stream.localPort}`
    const admin = await connectThroughProxy()
    await admin.query('SELECT pg_terminate_backend($1)', [rows[0].pid])
    await admin.end()
    await t.rejects(victim.query('SELECT 1'), 'the next query fails at once')
    const line = await proxy.line((l) => l.msg === 'session closed' && l.client === victimAddress)
    // The server's FIN normally reaches the proxy first (target_end); on a loaded machine the
    // client, told by the server's error message, may close its side first (client_end).
    // Either way both legs end with a FIN: the session ended, it was not cut.
    t.match(line, { reason: /^(target_end|client_end)$/, clientClose: 'fin', targetClose: 'fin' })
  })
}
