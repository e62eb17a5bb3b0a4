// The transports every relay and teardown suite runs against, as ws runs one suite against
// bufferutil's native build and its JavaScript fallback: the native pump and Node streams.
// A suite written once, run once per transport, proves the two behave the same.

import t, { type Test } from 'tap'
import type { TransportKind } from '../../src/transport/transport.ts'

export const TRANSPORTS: readonly TransportKind[] = ['native', 'stream']

/** Each transport with the native helper's socket options, and Node streams on the setKeepAlive fallback. */
export const SETUPS: ReadonlyArray<{ name: string; native: boolean; relay: TransportKind }> = [
  ...TRANSPORTS.map((relay) => ({ name: `native helper, ${relay === 'native' ? 'its pump' : 'Node streams'}`, native: true, relay })),
  { name: 'setKeepAlive fallback', native: false, relay: 'stream' },
]

/** Runs `suite` once per transport, each run a subtest named after its transport. */
export function eachTransport(suite: (t: Test, relay: TransportKind) => void): void {
  for (const relay of TRANSPORTS) {
    t.test(`over ${relay === 'native' ? 'the native pump' : 'Node streams'}`, async (t) => suite(t, relay))
  }
}
