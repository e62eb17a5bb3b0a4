// Its own upgrade, in the survival lab: with sessions open through ka-proxy across the NAT,
// SIGUSR2 hands them to a new process, and after a wait longer than the NAT's timeout every one
// still answers (the adopted sockets kept their keepalive), a new session opens, the old process
// is gone, and nothing of either generation is left once the relay is stopped. A pair (two
// ka-proxies, the link across the NAT) upgrades one end, then the other, in the same window.

import t from 'tap'
import { createWorkbench, kaProxy, kaProxyPair, ownUpgrade } from '../bench/lab/index.ts'
import { NAT_TIMEOUT, OPTIONS, labFor, labSkip } from './lab-support.ts'

const SESSIONS = 5
const skip = await labSkip()

t.test('ka-proxy, and a ka-proxy pair, survive their own upgrade: every session still works after it', { skip }, async t => {
  const lab = await labFor(t)
  const wb = await createWorkbench(lab, [
    { relay: kaProxy(), options: OPTIONS },
    { relay: kaProxyPair(), options: { ...OPTIONS, pairHeartbeat: 1 } }
  ], SESSIONS)
  const outcomes = await ownUpgrade(wb, NAT_TIMEOUT + 2)
  const how = {
    'ka-proxy': 'SIGUSR2: listeners and sessions handed over',
    'ka-proxy-pair': 'SIGUSR2 to the near end, then to the far end: listeners, sessions and pair links handed over'
  }
  t.same(outcomes.map(o => o.relay).sort(), Object.keys(how), 'both were measured')
  for (const o of outcomes) {
    t.equal(o.error, undefined, `${o.relay}: the upgrade succeeded`)
    t.equal(o.sessions, SESSIONS, `${o.relay}: all sessions opened`)
    t.equal(o.working, SESSIONS, `${o.relay}: every session answered ${NAT_TIMEOUT + 2} s after the upgrade`)
    t.same(o.ends, [], `${o.relay}: none was closed or found dead`)
    t.ok(o.newSession, `${o.relay}: a new session opens after it`)
    t.notOk(o.oldRunning, `${o.relay}: the old process${o.relay === 'ka-proxy-pair' ? ' of each end' : ''} has exited`)
    t.equal(o.how, how[o.relay as keyof typeof how], `${o.relay}: how it upgrades`)
  }
})
