// The link of a ka-proxy pair cut (both ways, in the NAT) for longer than --resume-window: the
// sessions wait out the window, then both plain legs are reset (the app and the server each see
// an RST), each end writes one `session closed` line per session with reason pair_lost, and
// neither end holds a socket of those sessions afterwards (ss).

import t from 'tap'
import { createWorkbench, heldSockets, kaProxyPair, sleep, type RunningPair } from '../bench/lab/index.ts'
import { waitUntil } from '../bench/lab/scenarios/workbench.ts'
import { SETTLE_MS } from '../bench/lab/scenarios/blackhole.ts'
import { OPTIONS, SLACK, labFor, labSkip } from './lab-support.ts'

const SESSIONS = 5
const HEARTBEAT = 0.5
const RESUME_WINDOW = 3
/** The link is found dead after 3 heartbeats; the window counts from then. */
const LOST_BY = HEARTBEAT * 3 + RESUME_WINDOW
const skip = await labSkip()

t.test(`the link cut for longer than a ${RESUME_WINDOW}-s resume window`, { skip }, async t => {
  const lab = await labFor(t, 600)
  const wb = await createWorkbench(lab, [{ relay: kaProxyPair(), options: { ...OPTIONS, pairHeartbeat: HEARTBEAT, resumeWindow: RESUME_WINDOW } }], SESSIONS)
  const deployed = await wb.deploy('lost')
  try {
    const [d] = deployed
    if (d === undefined) throw new Error('the pair was not deployed')
    const { near, far, pairListen } = (d.running as RunningPair).ends
    t.equal(d.opened, SESSIONS, 'all sessions opened through the pair')

    await lab.faults.blackholeServer()
    const cut = Date.now()
    const ended = (): boolean => wb.driver.closes(d.group).length >= SESSIONS && wb.echo.closes(d.group).length >= SESSIONS
    await waitUntil(ended, cut + (LOST_BY + SLACK + 5) * 1000)
    await sleep(SETTLE_MS)

    const appSaw = wb.driver.closes(d.group)
    const ends = appSaw.map(c => (c.t - cut) / 1000)
    t.same(appSaw.map(c => c.how), Array(SESSIONS).fill('rst'), 'the app saw an RST on every session')
    t.ok(ends.length === SESSIONS && ends.every(s => s >= RESUME_WINDOW && s <= LOST_BY + SLACK), `after the window, not before (${ends.map(s => s.toFixed(2)).join(', ')} s; window ${RESUME_WINDOW} s, link dead after ${HEARTBEAT * 3} s)`)
    t.same(wb.echo.closes(d.group).map(c => c.how), Array(SESSIONS).fill('rst'), 'the server saw an RST on every session')

    const log = d.running.sessionLog?.() ?? []
    for (const end of ['near', 'far']) {
      const lines = log.filter(l => l.end === end)
      t.equal(lines.length, SESSIONS, `${end} end: one "session closed" line per session`)
      t.equal(new Set(lines.map(l => l.session)).size, SESSIONS, `${end} end: for distinct sessions`)
      t.same([...new Set(lines.map(l => l.reason))], ['pair_lost'], `${end} end: reason pair_lost`)
    }

    // The near end keeps trying to reach the far end (new links), nothing else; the far end holds nothing.
    const nearHeld = await heldSockets(lab.ns('client'), [near.pid])
    t.same(nearHeld.filter(s => s.peer.port !== pairListen.port), [], `near end: no socket but its link attempts (${JSON.stringify(nearHeld.map(s => `${s.state} ${s.peer.host}:${s.peer.port}`))})`)
    const farHeld = await heldSockets(lab.ns('server'), [far.pid])
    t.same(farHeld, [], 'far end: no socket (its old link and every target leg closed)')
  } finally {
    await wb.withdraw(deployed)
  }
})
