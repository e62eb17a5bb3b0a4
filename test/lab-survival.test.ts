// ka-proxy keeps idle sessions alive through a NAT that forgets idle flows: every session
// through it still works after ≥ 3T idle, while direct connections in the same run all die.

import t from 'tap'
import { createWorkbench, relayByName, survival } from '../bench/lab/index.ts'
import { NAT_TIMEOUT, OPTIONS, labFor, labSkip } from './lab-support.ts'

const SESSIONS = 10
const skip = await labSkip()

t.test(`ka-proxy keeps 100 % over ${3 * NAT_TIMEOUT} s idle; direct keeps 0 %`, { skip }, async t => {
  const lab = await labFor(t)
  const wb = await createWorkbench(lab, [
    { relay: relayByName('direct'), options: OPTIONS },
    { relay: relayByName('ka-proxy'), options: OPTIONS }
  ], SESSIONS)
  const [direct, ka] = await survival(wb, 3 * NAT_TIMEOUT)
  t.equal(direct?.sessions, SESSIONS, 'all direct sessions opened')
  t.equal(direct?.survived, 0, 'direct: none survive (the lab works)')
  t.equal(ka?.sessions, SESSIONS, 'all ka-proxy sessions opened')
  t.equal(ka?.survived, SESSIONS, 'ka-proxy: all survive')
  t.same(ka?.sessionLog, [], 'ka-proxy ended no session while they were idle')
})
