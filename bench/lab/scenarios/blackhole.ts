// The server vanishes (its packets are dropped in the router) and we time how long each relay
// takes to close the app's session, and with what (RST or FIN).
// - idle: the sessions have just exchanged data, then the cut. Keepalive should find it after
//   idle + interval × count.
// - in flight: the cut, then the app sends. The relay's data stays unacknowledged, and while it
//   does the kernel sends no keepalive probes: only TCP_USER_TIMEOUT bounds the wait (without
//   it, retransmissions go on for about 15 minutes).

import { sleep } from '../exec.ts'
import type { Outcome, Workbench } from './workbench.ts'
import { tally, waitUntil } from './workbench.ts'

export interface BlackholeOptions {
  inFlight: boolean
  /** Seconds to wait for the relays to notice. */
  windowSeconds: number
}

/** Time for a relay to finish closing after the app saw the close, before sockets are counted. */
export const SETTLE_MS = 1000

export async function blackholeTarget(wb: Workbench, opts: BlackholeOptions): Promise<Outcome[]> {
  const deployed = await wb.deploy(opts.inFlight ? 'inflight' : 'blackhole')
  try {
    await wb.lab.faults.blackholeServer()
    const cut = Date.now()
    if (opts.inFlight) await Promise.all(deployed.map(d => wb.driver.send(d.group, 'in flight\n')))
    const allClosed = (): boolean => deployed.every(d => wb.driver.closes(d.group).length >= d.opened)
    await waitUntil(allClosed, cut + opts.windowSeconds * 1000)
    const window = (Date.now() - cut) / 1000
    await sleep(SETTLE_MS)
    return await Promise.all(deployed.map(d => {
      const closes = wb.driver.closes(d.group)
      return wb.outcome(d, closes.map(c => (c.t - cut) / 1000), window, tally(closes.map(c => c.how)))
    }))
  } finally {
    await wb.withdraw(deployed)
  }
}
