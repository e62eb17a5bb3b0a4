// The upgrade (SIGUSR2) in front of a real PostgreSQL, with real clients (pg, pgbench): no client
// notices it. Each connection keeps its server session (the same backend pid before and after), an
// open transaction commits after it, and pgbench running through three upgrades in a row sees no
// failed transaction and no reconnect (the same backends from start to end).

import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { postgresUnavailable, startLocalPostgres } from '../bench/lab/postgres.ts'
import { run } from '../bench/lab/exec.ts'
import { pgbenchUnavailable } from '../bench/perf/postgres.ts'
import { sleep, waitFor } from './helpers/net.ts'
import type { LogLine } from './helpers/proxy.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'
import { alive, entryFile, start, upgradeTestSetup, type Started } from './helpers/upgrade.ts'

const missing = (await postgresUnavailable()) ?? (await pgbenchUnavailable())
if (missingPrerequisite(missing)) {
  t.pass(`skipped: needs PostgreSQL and pgbench: ${missing}`, { skip: true })
} else {
  const { dir } = upgradeTestSetup(t, 'upgrade-postgres')
  const db = await startLocalPostgres()
  t.teardown(() => db.stop())
  const pidFile = join(dir, 'proxy.pid')
  const entry = entryFile(t, dir, 'pg')
  const running: Started = await start(t, entry, ['--target', `127.0.0.1:${db.port}`, '--pid-file', pidFile, '--idle', '60'])
  const { proxy, port } = running
  /** The process serving now: the first, then each new one an upgrade started. */
  let serving = proxy.proc.pid!

  /** Every client still open is ended after each test, whatever its outcome, so the next starts clean. */
  const open = new Set<pg.Client>()
  t.afterEach(async () => {
    await Promise.all([...open].map((c) => c.end().catch(() => {})))
    open.clear()
  })
  const client = async (where: number, application = 'ka-proxy-upgrade-test'): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port: where, user: 'postgres', database: 'postgres', application_name: application })
    // A connection lost while idle shows as the next query failing, not as a crash of the file.
    c.on('error', () => {})
    open.add(c)
    await c.connect()
    return c
  }
  const backendPid = async (c: pg.Client): Promise<number> => (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number

  /**
   * SIGUSR2 to the serving process; resolves with its `upgrade done` line once it has exited, the
   * new one having said it took over. Every process of the chain writes to the one stdout.
   */
  const upgrade = async (): Promise<LogLine> => {
    const old = serving
    const mark = proxy.logs.length
    const after = (l: LogLine): boolean => proxy.logs.indexOf(l) >= mark
    process.kill(old, 'SIGUSR2')
    const done = await proxy.line((l) => after(l) && l.pid === old && l.msg.startsWith('upgrade '), 30_000)
    if (!done.msg.startsWith('upgrade done')) throw new Error(`upgrade of ${old} failed: ${String(done.reason ?? done.msg)}`)
    const newPid = Number(done.newPid)
    await proxy.line((l) => after(l) && l.pid === newPid && l.msg.startsWith('upgrade: took over'), 10_000)
    if (!(await waitFor(() => !alive(old), 10_000))) throw new Error(`the old process ${old} did not exit`)
    serving = newPid
    return done
  }

  t.test('40 sessions keep their server sessions, and an open transaction commits after the upgrade', async (t) => {
    const admin = await client(db.port)
    await admin.query('CREATE TABLE upgraded (id int PRIMARY KEY, note text)')
    const clients = await Promise.all(Array.from({ length: 40 }, () => client(port)))
    const before = await Promise.all(clients.map(backendPid))
    t.equal(new Set(before).size, 40, '40 distinct server sessions')
    // An open transaction: its row is not visible to anyone else until it commits.
    const tx = await client(port)
    await tx.query('BEGIN')
    await tx.query("INSERT INTO upgraded VALUES (1, 'before the upgrade')")
    const txPid = await backendPid(tx)
    const old = serving

    const done = await upgrade()
    t.not(serving, old, `a new process serves (pid ${serving})`)
    t.equal(done.sessions, 41, 'every session moved')
    t.equal(done.sessionsLeft, 0, 'none left in the old process')
    t.notOk(alive(old), 'the old process has exited')
    t.equal(readFileSync(pidFile, 'utf8'), `${serving}\n`, 'the pid file names the new process')

    const after = await Promise.all(clients.map(backendPid))
    t.same(after, before, 'each connection has the same server session (pg_backend_pid) after the upgrade')
    await tx.query("INSERT INTO upgraded VALUES (2, 'after the upgrade')")
    t.equal(await backendPid(tx), txPid, 'the transaction goes on in the same server session')
    await tx.query('COMMIT')
    const fresh = await client(port)
    const { rows } = await fresh.query('SELECT id, note FROM upgraded ORDER BY id')
    t.same(rows, [{ id: 1, note: 'before the upgrade' }, { id: 2, note: 'after the upgrade' }], 'the transaction committed across the upgrade, seen from a new connection')
    for (const c of [...clients, tx, fresh]) await c.end()
    await admin.end()
    t.ok(await waitFor(() => proxy.logs.filter((l) => l.pid === serving && l.msg === 'session closed').length >= 42, 10_000), 'the new process ended them, one line each')
    t.notOk(proxy.logs.some((l) => l.pid === old && l.msg === 'session closed'), 'the old process ended none')
  })

  t.test('pgbench through three upgrades in a row: no failed transaction, no reconnect', async (t) => {
    await run('pgbench', ['-i', '-q', '-s', '1', '-h', '127.0.0.1', '-p', String(db.port), '-U', 'postgres', 'postgres'])
    const application = 'ka-proxy-pgbench'
    const clients = 4
    // The default (TPC-B like) script: five statements in a transaction, so upgrades land inside
    // transactions; rate-limited to stay light on a shared machine; long enough for three upgrades.
    const bench = run('pgbench', ['-n', '-c', String(clients), '-j', '1', '-R', '200', '-T', '45', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', `dbname=postgres application_name=${application}`], { allowFail: true })
    const admin = await client(db.port)
    const backends = async (): Promise<string[]> =>
      (await admin.query('SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid', [application])).rows.map((r) => `${String(r.pid)} ${(r.backend_start as Date).toISOString()}`)
    t.ok(await waitFor(async () => (await backends()).length === clients, 15_000), `pgbench's ${clients} connections are up`)
    const first = await backends()
    await sleep(1000)
    const pids: number[] = [serving]
    for (let i = 1; i <= 3; i++) {
      const done = await upgrade()
      t.equal(done.sessions, clients, `upgrade ${i}: pgbench's ${clients} sessions moved`)
      t.equal(done.sessionsLeft, 0, `upgrade ${i}: none left behind`)
      pids.push(serving)
      t.same(await backends(), first, `upgrade ${i}: the same backends, none reconnected`)
      await sleep(1000)
    }
    t.equal(new Set(pids).size, 4, `each upgrade started a new process: ${pids.join(' -> ')}`)
    const last = await backends()
    const result = await bench
    await admin.end()
    t.same(last, first, 'the same backends (pid and start) from the first transaction to the last')
    t.equal(result.code, 0, `pgbench exited 0 (no client aborted)${result.code === 0 ? '' : `: ${result.stderr.slice(-800)}`}`)
    const processed = Number(/^number of transactions actually processed: (\d+)/m.exec(result.stdout)?.[1])
    const failed = Number(/^number of failed transactions: (\d+)/m.exec(result.stdout)?.[1])
    t.ok(processed > 1000, `${processed} transactions through the upgrades`)
    t.equal(failed, 0, 'no failed transaction')
    t.notMatch(result.stderr, /abort|error|could not|terminat/i, 'pgbench reported no error')
    t.equal(readFileSync(pidFile, 'utf8'), `${serving}\n`, 'the pid file names the last process')
  })

  t.teardown(async () => {
    if (!alive(serving)) return
    process.kill(serving, 'SIGTERM')
    await waitFor(() => !alive(serving), 10_000)
  })
}
