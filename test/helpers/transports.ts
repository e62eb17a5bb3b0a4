// The transports every relay and teardown suite runs against, as ws runs one suite against
// bufferutil's native build and its JavaScript fallback: the native pump and Node streams.
// A suite written once, run once per transport, proves the two behave the same.

import t, { type Test } from 'tap'
import type { TransportKind } from '../../src/transport/transport.ts'

export const TRANSPORTS: readonly TransportKind[] = ['native', 'stream']

/** Runs `suite` once per transport, each run a subtest named after its transport. */
export function eachTransport(suite: (t: Test, relay: TransportKind) => void): void {
  for (const relay of TRANSPORTS) {
    t.test(`over ${relay === 'native' ? 'the native pump' : 'Node streams'}`, async (t) => suite(t, relay))
  }
}
