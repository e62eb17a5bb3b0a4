// The app vanishes (its traffic to and from the relays is dropped) and we time how long each
// relay takes to close its target leg, as the server sees it, and with what (RST or FIN).
// Only relays take part: with a direct connection there is no second leg to close.

import { sleep } from '../exec.ts'
import type { Outcome, Workbench } from './workbench.ts'
import { tally, waitUntil } from './workbench.ts'
import { SETTLE_MS } from './blackhole.ts'

export async function clientVanishes(wb: Workbench, windowSeconds: number): Promise<Outcome[]> {
  const deployed = await wb.deploy('vanish', e => e.relay.proxies)
  try {
    await wb.lab.faults.blackholeClientSide(deployed.map(d => d.listen.port))
    const cut = Date.now()
    const allClosed = (): boolean => deployed.every(d => wb.echo.closes(d.group).length >= d.opened)
    await waitUntil(allClosed, cut + windowSeconds * 1000)
    const window = (Date.now() - cut) / 1000
    await sleep(SETTLE_MS)
    return await Promise.all(deployed.map(d => {
      const closes = wb.echo.closes(d.group)
      return wb.outcome(d, closes.map(c => (c.t - cut) / 1000), window, tally(closes.map(c => c.how ?? '?')))
    }))
  } finally {
    await wb.withdraw(deployed)
  }
}
