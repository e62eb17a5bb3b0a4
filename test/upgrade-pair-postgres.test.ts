// Paired mode in front of a real PostgreSQL, upgraded at each end in turn (SIGUSR2): every client
// keeps its server session (the same backend pid before and after both upgrades), and a
// transaction opened before the first commits after the second.

import t from 'tap'
import pg from 'pg'
import { postgresUnavailable, startLocalPostgres } from '../bench/lab/postgres.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'
import { startPairProcesses, upgradeProcess, upgradeTestSetup } from './helpers/upgrade.ts'

const missing = await postgresUnavailable()
if (missingPrerequisite(missing)) {
  t.pass(`skipped: needs PostgreSQL: ${missing}`, { skip: true })
} else {
  const { dir } = upgradeTestSetup(t, 'upgrade-pair-postgres')
  const db = await startLocalPostgres()
  t.teardown(() => db.stop())

  t.test('10 sessions keep their backends through an upgrade of the near end, then of the far end', async (t) => {
    const pair = await startPairProcesses(t, dir, db.port, 'pg')
    const open: pg.Client[] = []
    t.teardown(() => Promise.all(open.map((c) => c.end().catch(() => {}))))
    const client = async (port: number): Promise<pg.Client> => {
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', application_name: 'ka-proxy-pair-upgrade-test' })
      // A connection lost shows as the next query failing, not as a crash of the file.
      c.on('error', () => {})
      open.push(c)
      await c.connect()
      return c
    }
    const backendPid = async (c: pg.Client): Promise<number> => (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number

    const admin = await client(db.port)
    await admin.query('CREATE TABLE pair_upgraded (id int PRIMARY KEY, note text)')
    const clients = await Promise.all(Array.from({ length: 10 }, () => client(pair.nearPort)))
    const before = await Promise.all(clients.map(backendPid))
    t.equal(new Set(before).size, 10, '10 distinct server sessions through the pair')
    const tx = clients[0]!
    await tx.query('BEGIN')
    await tx.query("INSERT INTO pair_upgraded VALUES (1, 'before the upgrades')")

    for (const [end, name] of [[pair.near, 'near'], [pair.far, 'far']] as const) {
      const done = await upgradeProcess(end, end.proc.pid!)
      t.equal(done.sessions, 10, `the ${name} end's upgrade moved the 10 sessions`)
      t.same(await Promise.all(clients.map(backendPid)), before, `after the ${name} end's upgrade, every client has the same backend`)
    }
    t.equal((await admin.query('SELECT count(*)::int AS n FROM pair_upgraded')).rows[0].n, 0, 'the open transaction is still open (its row unseen)')
    await tx.query('COMMIT')
    t.same((await admin.query('SELECT note FROM pair_upgraded')).rows, [{ note: 'before the upgrades' }], 'it commits after both upgrades')
    const far = pair.far.logs.filter((l) => l.msg === 'pair session resumed').length
    t.ok(far >= 20, `the far end logged a resume per session per upgrade (${far})`)
    t.notOk([...pair.near.logs, ...pair.far.logs].some((l) => l.msg === 'session closed'), 'no session ended')
  })
}
