// The NAT forgets everything (conntrack -F in its namespace; tcp_loose 0, so every old flow's
// next packet is INVALID and dropped): 20 idle PostgreSQL sessions through a ka-proxy pair keep
// their server sessions (the same pg_backend_pid() after), and a bulk stream running across the
// flush comes back byte-exact, each flowing again within heartbeat × 3 + 2 s of the flush; the
// same PostgreSQL's sessions connected directly or through one ka-proxy get no answer.

import t, { type Test } from 'tap'
import {
  holdPgSessions, kaProxy, natFlushUnavailable, postgresUnavailable, sleep, startBulkStream, startEchoServer,
  startPair, startPostgres, type Endpoint, type Lab, type RunningRelay
} from '../bench/lab/index.ts'
import type { LabProcess } from '../bench/lab/process.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'
import { OPTIONS, labFor, labSkip } from './lab-support.ts'

const HEARTBEAT = 1
/** What the issue allows from the flush to every session flowing again. */
const RECOVERY_BOUND_MS = (HEARTBEAT * 3 + 2) * 1000
const PAIRED_SESSIONS = 20
const OTHER_SESSIONS = 5
/** How long the sessions that did not survive get to answer. */
const QUERY_TIMEOUT_MS = 8000
const BULK_SECONDS = 10
const BULK_RATE = 2_000_000
/** More than could have been past the NAT when it was flushed, at BULK_RATE. */
const BULK_FLOWING = 128 * 1024
const skip = await labSkip() || missingPrerequisite(await postgresUnavailable() ?? await natFlushUnavailable())

t.test('conntrack -F: paired sessions resume, direct and plain ka-proxy ones are dead', { skip }, async t => {
  // The NAT's idle timeout is out of the way: only the flush makes it forget.
  const lab = await labFor(t, 600)
  const db = await startPostgres(lab)
  await startEchoServer(lab, [7000])
  const dbAt = { host: db.host, port: db.port }
  const relays: RunningRelay[] = []
  const apps: LabProcess[] = []
  try {
    await check(t, lab, dbAt, relays, apps)
  } finally {
    // The apps first: a relay stopped on SIGTERM waits for its sessions to end.
    await Promise.all(apps.map(p => p.stop()))
    await Promise.all(relays.map(r => r.stop()))
    await db.stop()
  }
})

async function check(t: Test, lab: Lab, dbAt: Endpoint, relays: RunningRelay[], apps: LabProcess[]): Promise<void> {
  const pairOptions = { ...OPTIONS, pairHeartbeat: HEARTBEAT }
  const pgPair = await startPair({ lab, listen: { host: '127.0.0.1', port: 15432 }, target: dbAt, options: pairOptions })
  relays.push(pgPair)
  const bulkPair = await startPair({ lab, listen: { host: '127.0.0.1', port: 15001 }, target: { host: lab.addresses.server, port: 7000 }, options: pairOptions })
  relays.push(bulkPair)
  const plain = await kaProxy().start({ lab, listen: { host: '127.0.0.1', port: 15433 }, target: dbAt, options: OPTIONS })
  relays.push(plain)

  const [viaPair, viaProxy, direct] = await Promise.all([
    holdPgSessions(lab, pgPair.address, PAIRED_SESSIONS),
    holdPgSessions(lab, plain.address, OTHER_SESSIONS),
    holdPgSessions(lab, dbAt, OTHER_SESSIONS)
  ])
  const bulk = startBulkStream(lab, bulkPair.address, BULK_SECONDS, BULK_RATE)
  apps.push(viaPair.proc, viaProxy.proc, direct.proc, bulk.proc)
  const deadline = Date.now() + 5000
  while (bulk.receivedBy(Date.now()) < BULK_FLOWING && Date.now() < deadline) await sleep(50)
  t.ok(bulk.receivedBy(Date.now()) >= BULK_FLOWING, 'the bulk stream flows through the pair')
  await sleep(1000)

  await lab.faults.flushNat()
  const flushed = Date.now()
  const [pairAnswers, proxyAnswers, directAnswers] = await Promise.all([viaPair.query(QUERY_TIMEOUT_MS), viaProxy.query(QUERY_TIMEOUT_MS), direct.query(QUERY_TIMEOUT_MS)])

  const answered = pairAnswers.map(a => a.pid)
  t.same(answered, viaPair.pids, `pair: all ${PAIRED_SESSIONS} sessions answer with their own backend (${JSON.stringify(pairAnswers.filter(a => a.pid === null))})`)
  const slowest = Math.max(...pairAnswers.map(a => a.at)) - flushed
  t.ok(pairAnswers.every(a => a.pid !== null) && slowest <= RECOVERY_BOUND_MS, `pair: every session answers within ${RECOVERY_BOUND_MS} ms of the flush (the last after ${slowest} ms)`)
  t.ok(proxyAnswers.every(a => a.pid === null), `ka-proxy: no session answers (${JSON.stringify(proxyAnswers.map(a => a.error))})`)
  t.ok(directAnswers.every(a => a.pid === null), `direct: no session answers within ${QUERY_TIMEOUT_MS} ms (${JSON.stringify(directAnswers.map(a => a.error))})`)

  const result = await bulk.result
  t.ok(result.exact && result.how === 'fin', `bulk: every byte came back once and in order, and the echo ended normally (${JSON.stringify(result)})`)
  const flowing = bulk.flowingAfter(flushed, BULK_FLOWING)
  t.ok(flowing !== null && flowing - flushed <= RECOVERY_BOUND_MS, `bulk: flowing again within ${RECOVERY_BOUND_MS} ms of the flush (after ${flowing === null ? 'never' : flowing - flushed} ms)`)
  t.ok(pgPair.linkDowns?.() === 1 && bulkPair.linkDowns?.() === 1, 'each pair lost its link once (heartbeat timeout: the flush was noticed, not hidden)')
  t.same([...pgPair.sessionLog?.() ?? [], ...bulkPair.sessionLog?.() ?? []].filter(l => l.reason === 'pair_lost'), [], 'no paired session was lost')
}
