// Two real PostgreSQL servers behind the real command with `--heartbeat pg`. The first is
// frozen with SIGSTOP (postmaster and backends: a hung machine; its kernel still accepts
// connections and ACKs keepalive probes): its sessions must be reset within
// interval × fall + timeout (the README's bound, plus a stated slack), the pg clients must get an error instead of hanging,
// and new connections must go to the second. After SIGCONT and `rise` good checks, the
// first is used again.

import t from 'tap'
import pg from 'pg'
import { startCliProxy } from './helpers/cli.ts'
import { freeze, thaw } from '../bench/lab/pids.ts'
import { HEARTBEAT_SLACK_MS, downWithinMs, upWithinMs } from './helpers/heartbeat.ts'
import { waitFor } from './helpers/net.ts'
import { postgresUnavailable, startLocalPostgres } from '../bench/lab/postgres.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'

const HB = { interval: 0.5, timeout: 0.4, fall: 2, rise: 2 }
const BOUND_MS = downWithinMs(HB)

const missing = await postgresUnavailable()
if (missingPrerequisite(missing)) {
  t.pass(`skipped: ${missing}`, { skip: true })
} else {
  const [first, second] = await Promise.all([startLocalPostgres(), startLocalPostgres()])
  t.teardown(() => Promise.all([first.stop(), second.stop()]))
  const proxy = await startCliProxy([
    '--target', `127.0.0.1:${first.port},127.0.0.1:${second.port}`,
    '--heartbeat', 'pg',
    '--heartbeat-interval', String(HB.interval),
    '--heartbeat-timeout', String(HB.timeout),
    '--heartbeat-fall', String(HB.fall),
    '--heartbeat-rise', String(HB.rise),
    // The return to the first once it is up again is what this test checks (manual is the default).
    '--failback', 'auto',
  ])
  t.teardown(() => proxy.stop('SIGKILL'))
  const FIRST = `127.0.0.1:${first.port}`
  const SECOND = `127.0.0.1:${second.port}`

  const client = async (): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'postgres', database: 'postgres' })
    c.on('error', () => {})
    await c.connect()
    return c
  }
  const serverPort = async (c: pg.Client): Promise<number> => (await c.query('SELECT inet_server_port() AS port')).rows[0].port

  t.test('frozen PostgreSQL: sessions reset in time, clients get an error, new ones go to the second; resumed: used again', async (t) => {
    await proxy.line((l) => l.msg === 'target up' && l.target === FIRST)
    await proxy.line((l) => l.msg === 'target up' && l.target === SECOND)
    const clients = await Promise.all([client(), client(), client()])
    for (const c of clients) t.equal(await serverPort(c), first.port, 'first healthy target wins')

    freeze(first.pid)
    const frozenAt = Date.now()
    // A query sent to a frozen server hangs until the proxy resets the session.
    const failures = await Promise.all(
      clients.map((c) =>
        c.query('SELECT 1').then(
          () => ({ error: undefined, ms: Date.now() - frozenAt }),
          (error: Error) => ({ error, ms: Date.now() - frozenAt }),
        ),
      ),
    )
    for (const f of failures) {
      t.ok(f.error, `the client got an error: ${f.error?.message}`)
      t.ok(f.ms <= BOUND_MS, `within ${BOUND_MS} ms (${f.ms} ms)`)
    }
    const down = await proxy.line((l) => l.msg === 'target down' && l.target === FIRST)
    const detectedMs = (down.time as number) - frozenAt
    t.match(down, { from: 'up', to: 'down', reason: 'timeout', onDown: 'kill', closed: 3 }, 'one line, with the count')
    t.ok(detectedMs <= BOUND_MS, `marked down ${detectedMs} ms after SIGSTOP (bound ${BOUND_MS - HEARTBEAT_SLACK_MS} ms + ${HEARTBEAT_SLACK_MS} ms)`)
    t.comment(`pg detection: marked down after ${detectedMs} ms, clients failed after ${failures.map((f) => f.ms).join(', ')} ms; bound ${BOUND_MS - HEARTBEAT_SLACK_MS} ms (+${HEARTBEAT_SLACK_MS} ms)`)
    const killed = (): typeof proxy.logs => proxy.logs.filter((l) => l.msg === 'session closed' && l.reason === 'target_down')
    t.ok(await waitFor(() => killed().length === 3, 2000), 'each reset session logged with reason target_down')
    const closed = killed()
    t.ok(closed.every((l) => l.clientClose === 'rst' && l.targetClose === 'rst' && l.target === FIRST), 'both legs reset')

    const during = await client()
    t.equal(await serverPort(during), second.port, 'a new connection goes to the second')
    await during.end()

    thaw(first.pid)
    const thawedAt = Date.now()
    const up = await proxy.line((l) => l.msg === 'target up' && l.target === FIRST && l.from === 'down', 10_000)
    const riseMs = (up.time as number) - thawedAt
    t.ok(riseMs <= upWithinMs(HB), `up again ${riseMs} ms after SIGCONT (bound ${upWithinMs(HB)} ms)`)
    t.comment(`pg recovery: up again ${riseMs} ms after SIGCONT (rise ${HB.rise} × interval ${HB.interval} s)`)
    const after = await client()
    t.equal(await serverPort(after), first.port, 'the first is used again')
    await after.end()
  })
}
