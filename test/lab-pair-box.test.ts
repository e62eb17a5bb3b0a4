// A box on the path that times out on data only (HAProxy, timeout client/server 6 s, in the NAT's
// namespace): sessions through a ka-proxy pair stay idle 30 s and then echo exactly, because the
// pair's heartbeats are data the box counts; sessions through one ka-proxy, with keepalive every
// second on both legs, are closed by the box at its timeout, and so are socat's (a peer whose
// connection must cross the box too: its relay once connected around it). All share the one 30-s wait.

import t from 'tap'
import { boxUnavailable, createWorkbench, dataTimeout, DataTimeoutBox, kaProxy, kaProxyPair, relayByName } from '../bench/lab/index.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'
import { OPTIONS, labFor, labSkip } from './lab-support.ts'

const SESSIONS = 5
const BOX_TIMEOUT = 6
const IDLE = 30
/** Well under the box's timeout: a heartbeat crosses the link at least twice per timeout. */
const PAIR_HEARTBEAT = 2
const socat = relayByName('socat')
const skip = await labSkip() || missingPrerequisite(await boxUnavailable()) || missingPrerequisite(await socat.unavailable())

t.test(`idle ${IDLE} s through a box that times out on data after ${BOX_TIMEOUT} s`, { skip }, async t => {
  // The NAT's own timeout is out of the way: only the box times out.
  const lab = await labFor(t, 600)
  const box = new DataTimeoutBox(lab, BOX_TIMEOUT)
  const wb = await createWorkbench(lab, [
    { relay: kaProxy(), options: OPTIONS },
    { relay: kaProxyPair(), options: { ...OPTIONS, pairHeartbeat: PAIR_HEARTBEAT } },
    { relay: socat, options: OPTIONS }
  ], SESSIONS)
  const [ka, pair, peer] = await dataTimeout(wb, box, IDLE)

  t.equal(pair?.sessions, SESSIONS, 'pair: all sessions opened through the box')
  t.equal(pair?.survived, SESSIONS, `pair: every session echoes exactly after ${IDLE} s idle (ends: ${JSON.stringify(pair?.ends)})`)
  t.same(pair?.sessionLog, [], 'pair: neither end ended a session')
  t.equal(pair?.linkDowns, 0, 'pair: its link never went down (the heartbeats kept the box from timing it out; no resume needed)')

  t.equal(ka?.sessions, SESSIONS, 'ka-proxy: all sessions opened through the box')
  t.equal(ka?.survived, 0, 'ka-proxy: no session survives, whatever its keepalive')
  const ends = ka?.ends ?? []
  t.ok(ends.length === SESSIONS && ends.every(s => s > BOX_TIMEOUT - 1 && s < BOX_TIMEOUT + 2),
    `ka-proxy: each closed at the box's timeout, ${BOX_TIMEOUT} s (${ends.map(s => s.toFixed(2)).join(', ')} s)`)

  t.equal(peer?.sessions, SESSIONS, 'socat: all sessions opened through the box')
  t.equal(peer?.survived, 0, 'socat: no session survives: its connections cross the box too')
})
