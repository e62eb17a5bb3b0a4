// ka-proxy keeps idle sessions alive through a NAT that forgets idle flows: every session
// through it still works whatever its idle time up to 3T, while direct connections in the same
// run live until T and are dead after it (the lab works, and the curve shows where).

import t from 'tap'
import { createWorkbench, relayByName, survival } from '../bench/lab/index.ts'
import { firstDeath } from '../bench/survival/curve.ts'
import { staggerIdle } from '../src/probe/schedule.ts'
import { NAT_TIMEOUT, OPTIONS, labFor, labSkip } from './lab-support.ts'

const SESSIONS = 10
const IDLE_MAX = 3 * NAT_TIMEOUT
/** Idle times of neighbouring sessions are this far apart. */
const SPACING = IDLE_MAX / SESSIONS
/** Sessions checked this close to T may go either way (idle is counted from the last open). */
const MARGIN = 0.5
const skip = await labSkip()

t.test(`each session checked once after its own idle time up to ${IDLE_MAX} s: ka-proxy keeps 100 %, direct dies at T`, { skip }, async t => {
  const lab = await labFor(t)
  const wb = await createWorkbench(lab, [
    { relay: relayByName('direct'), options: OPTIONS },
    { relay: relayByName('ka-proxy'), options: OPTIONS }
  ], SESSIONS)
  const asked = staggerIdle(0, IDLE_MAX, SESSIONS, { spacing: 'even' })
  const [direct, ka] = await survival(wb, asked)
  for (const o of [direct, ka]) {
    t.equal(o?.sessions, SESSIONS, `${o?.relay}: all sessions opened`)
    const idles = o?.checks.map(c => c.idle) ?? []
    t.ok(idles.length === SESSIONS && idles.every((idle, i) => Math.abs(idle - (asked[i] as number)) < MARGIN),
      `${o?.relay}: each session checked once, at its own idle time (${idles.map(i => i.toFixed(2)).join(', ')})`)
  }
  const directChecks = direct?.checks ?? []
  const seen = JSON.stringify(directChecks)
  t.ok(directChecks.filter(c => c.idle < NAT_TIMEOUT - MARGIN).every(c => c.result === 'ok'), `direct: sessions idle shorter than T answer: ${seen}`)
  t.ok(directChecks.filter(c => c.idle > NAT_TIMEOUT + MARGIN).every(c => c.result !== 'ok'), `direct: sessions idle longer than T are dead: ${seen}`)
  const death = firstDeath(directChecks)
  t.ok(death !== null && death.aliveAfter === 0 && death.firstDead > NAT_TIMEOUT - MARGIN && death.firstDead < NAT_TIMEOUT + SPACING + MARGIN,
    `direct: the curve drops once, at T within the spacing (${JSON.stringify(death)})`)
  t.equal(ka?.survived, SESSIONS, 'ka-proxy: all survive')
  t.equal(firstDeath(ka?.checks ?? []), null, 'ka-proxy: the curve never drops')
  t.same(ka?.sessionLog, [], 'ka-proxy ended no session while they were idle')
})
