// Its own upgrade, in the survival lab: with sessions open through ka-proxy across the NAT,
// SIGUSR2 hands them to a new process, and after a wait longer than the NAT's timeout every one
// still answers (the adopted sockets kept their keepalive), a new session opens, the old process
// is gone, and nothing of either generation is left once the relay is stopped.

import t from 'tap'
import { createWorkbench, kaProxy, ownUpgrade } from '../bench/lab/index.ts'
import { NAT_TIMEOUT, OPTIONS, labFor, labSkip } from './lab-support.ts'

const SESSIONS = 5
const skip = await labSkip()

t.test('ka-proxy survives its own upgrade: every session still works after it', { skip }, async t => {
  const lab = await labFor(t)
  const wb = await createWorkbench(lab, [{ relay: kaProxy(), options: OPTIONS }], SESSIONS)
  const [ka] = await ownUpgrade(wb, NAT_TIMEOUT + 2)
  t.ok(ka !== undefined, 'ka-proxy was measured')
  if (ka === undefined) return
  t.equal(ka.error, undefined, 'the upgrade succeeded')
  t.equal(ka.sessions, SESSIONS, 'all sessions opened')
  t.equal(ka.working, SESSIONS, `every session answered ${NAT_TIMEOUT + 2} s after the upgrade`)
  t.same(ka.ends, [], 'none was closed or found dead')
  t.ok(ka.newSession, 'a new session opens after it')
  t.notOk(ka.oldRunning, 'the old process has exited')
  t.equal(ka.how, 'SIGUSR2: listeners and sessions handed over')
})
