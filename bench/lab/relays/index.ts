// The relays the lab can compare, by name, in the order the report lists them.

import type { Relay } from './relay.ts'
import { direct } from './direct.ts'
import { kaProxy } from './ka-proxy.ts'
import { kaProxyPair } from './ka-proxy-pair.ts'
import { haproxy } from './haproxy.ts'
import { socat } from './socat.ts'
import { nginx } from './nginx.ts'

export type { KeepaliveSettings, Path, Relay, RelayOptions, RelayStart, RunningRelay } from './relay.ts'
export { keepaliveBound } from './relay.ts'
export { kaProxy } from './ka-proxy.ts'
export { kaProxyPair, startPair, type RunningPair, type PairEnds } from './ka-proxy-pair.ts'

export const RELAYS: readonly Relay[] = [direct, kaProxy(), kaProxyPair(), haproxy, socat, nginx]

export function relayByName(name: string): Relay {
  const relay = RELAYS.find(r => r.name === name)
  if (relay === undefined) throw new RangeError(`unknown relay "${name}"; known: ${RELAYS.map(r => r.name).join(', ')}`)
  return relay
}
