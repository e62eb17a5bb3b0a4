// A target that vanishes (blackholed in the router) or resets: ka-proxy closes the client leg
// by RST within idle + interval × count + 1.5 s, whether the session was idle or had data in
// flight, leaves no socket behind (counted from its descriptors, which `ss` alone would miss
// for a reset socket still open), and logs one line per session with the reason.

import t, { type Test } from 'tap'
import { blackholeTarget, createWorkbench, heldSockets, kaProxy, sleep, type Outcome } from '../bench/lab/index.ts'
import { BOUND, OPTIONS, SLACK, labFor, labSkip } from './lab-support.ts'

const SESSIONS = 5
const skip = await labSkip()

function checkDetection(t: Test, o: Outcome | undefined, reason: string): void {
  t.ok(o !== undefined, 'ka-proxy was measured')
  if (o === undefined) return
  t.equal(o.sessions, SESSIONS, 'all sessions opened')
  t.equal(o.ends.length, SESSIONS, 'every client leg was closed')
  const late = o.ends.filter(s => s > BOUND + SLACK)
  t.same(late, [], `each within ${BOUND} + ${SLACK} s (took ${o.ends.map(s => s.toFixed(2)).join(', ')} s)`)
  t.same(o.peerSaw, { rst: SESSIONS }, 'the app saw an RST, not a normal-looking FIN')
  t.equal(o.socketsLeft, 0, 'ka-proxy holds no socket afterwards (ss)')
  t.equal(o.descriptorsLeft, 0, 'nor any socket descriptor beyond its listening ones (/proc/<pid>/fd)')
  const log = o.sessionLog ?? []
  t.equal(log.length, SESSIONS, 'one "session closed" line per session')
  t.equal(new Set(log.map(l => l.session)).size, SESSIONS, 'for distinct sessions')
  t.same([...new Set(log.map(l => `${l.reason} leg=${l.leg} client=${l.clientClose}`))], [`${reason} leg=target client=rst`], 'with the reason')
}

t.test('blackholed target while idle', { skip }, async t => {
  const lab = await labFor(t)
  const wb = await createWorkbench(lab, [{ relay: kaProxy(), options: OPTIONS }], SESSIONS)
  const [ka] = await blackholeTarget(wb, { inFlight: false, windowSeconds: BOUND + SLACK + 2 })
  checkDetection(t, ka, 'keepalive_timeout')
})

t.test('blackholed target with data in flight (TCP_USER_TIMEOUT)', { skip }, async t => {
  const lab = await labFor(t)
  const wb = await createWorkbench(lab, [{ relay: kaProxy(), options: OPTIONS }], SESSIONS)
  const [ka] = await blackholeTarget(wb, { inFlight: true, windowSeconds: BOUND + SLACK + 2 })
  checkDetection(t, ka, 'keepalive_timeout')
})

t.test('target resets its connections', { skip }, async t => {
  const lab = await labFor(t)
  const wb = await createWorkbench(lab, [{ relay: kaProxy(), options: OPTIONS }], SESSIONS)
  const deployed = await wb.deploy('reset')
  try {
    const d = deployed[0]
    if (d === undefined) throw new Error('ka-proxy was not deployed')
    await lab.faults.resetServer(d.target.port)
    await sleep(500)
    const closes = wb.driver.closes(d.group)
    t.same(closes.map(c => c.how), Array(SESSIONS).fill('rst'), 'every app session got an RST at once')
    t.same(await heldSockets(lab.ns('client'), await d.running.pids()), [], 'ka-proxy holds no socket afterwards (ss)')
    t.equal(await d.running.descriptorsLeft?.(), 0, 'nor any socket descriptor beyond its listening ones (/proc/<pid>/fd)')
    const log = d.running.sessionLog?.() ?? []
    t.same(log.map(l => `${l.reason} leg=${l.leg} client=${l.clientClose}`), Array(SESSIONS).fill('target_reset leg=target client=rst'),
      'one line per session: target_reset, client leg closed by RST')
  } finally {
    await wb.withdraw(deployed)
  }
})
