// A real PostgreSQL behind the NAT: a pooled connection left idle longer than T is dead when
// it connects directly (the next query times out), and alive when it goes through ka-proxy.

import t from 'tap'
import { idleQuery, kaProxy, postgresUnavailable, startPostgres } from '../bench/lab/index.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'
import { NAT_TIMEOUT, OPTIONS, labFor, labSkip } from './lab-support.ts'

const skip = await labSkip() || missingPrerequisite(await postgresUnavailable())
const IDLE = 2 * NAT_TIMEOUT + 1
const QUERY_TIMEOUT_MS = 2000

t.test(`PostgreSQL idle ${IDLE} s behind a NAT that forgets after ${NAT_TIMEOUT} s`, { skip }, async t => {
  const lab = await labFor(t)
  const db = await startPostgres(lab)
  const listen = { host: '127.0.0.1', port: 15432 }
  const proxy = await kaProxy().start({ lab, listen, target: { host: db.host, port: db.port }, options: OPTIONS })
  try {
    const [direct, viaProxy] = await Promise.all([
      idleQuery(lab, { host: db.host, port: db.port }, IDLE, QUERY_TIMEOUT_MS),
      idleQuery(lab, listen, IDLE, QUERY_TIMEOUT_MS)
    ])
    t.ok(direct.first, 'direct: the first query works')
    t.notOk(direct.afterIdle, `direct: the query after the idle time fails (${direct.error ?? 'no error'})`)
    t.ok(viaProxy.first, 'through ka-proxy: the first query works')
    t.ok(viaProxy.afterIdle, `through ka-proxy: the query after the idle time works${viaProxy.error === undefined ? '' : ` (${viaProxy.error})`}`)
  } finally {
    await proxy.stop()
    await db.stop()
  }
})
