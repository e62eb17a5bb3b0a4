// The app vanishes without a word (its traffic to the proxy is dropped): ka-proxy's client-leg
// keepalive notices, and it closes the target leg with an RST (the server learns of a failure,
// not a normal end) within the client-leg bound + 1.5 s, leaves no socket behind (not in `ss`,
// no descriptor in /proc), and logs one line per session with the reason.

import t from 'tap'
import { clientVanishes, createWorkbench, kaProxy } from '../bench/lab/index.ts'
import { BOUND, OPTIONS, SLACK, labFor, labSkip } from './lab-support.ts'

const SESSIONS = 5
const skip = await labSkip()

t.test('vanished client: target leg closed within the client-leg bound', { skip }, async t => {
  const lab = await labFor(t)
  const wb = await createWorkbench(lab, [{ relay: kaProxy(), options: OPTIONS }], SESSIONS)
  const [ka] = await clientVanishes(wb, BOUND + SLACK + 2)
  t.ok(ka !== undefined, 'ka-proxy was measured')
  if (ka === undefined) return
  t.equal(ka.sessions, SESSIONS, 'all sessions opened')
  t.equal(ka.ends.length, SESSIONS, 'the server saw every target leg closed')
  t.same(ka.ends.filter(s => s > BOUND + SLACK), [], `each within ${BOUND} + ${SLACK} s (took ${ka.ends.map(s => s.toFixed(2)).join(', ')} s)`)
  t.same(ka.peerSaw, { rst: SESSIONS }, 'the server saw an RST on every session, not a FIN')
  t.equal(ka.socketsLeft, 0, 'ka-proxy holds no socket afterwards (ss)')
  t.equal(ka.descriptorsLeft, 0, 'nor any socket descriptor beyond its listening ones (/proc/<pid>/fd)')
  const log = ka.sessionLog ?? []
  t.equal(log.length, SESSIONS, 'one "session closed" line per session')
  t.same([...new Set(log.map(l => `${l.reason} leg=${l.leg} client=${l.clientClose} target=${l.targetClose}`))],
    ['keepalive_timeout leg=client client=failed target=rst'], 'with the reason; the client leg failed, the target leg was reset')
})
