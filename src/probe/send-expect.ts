// send: any other protocol. The user's bytes, answered with a reply that starts with the
// expected bytes, once connected and again after the idle time (the heartbeat checker's
// exchange). The server must keep the connection open after answering (HTTP keep-alive, a
// line protocol); most HTTP servers close idle ones within a minute by themselves.

import { sendExpectExchange } from '../heartbeat/send-expect.ts'
import { ProbeLink, type ProbeCheck } from './check.ts'

export function sendExpectCheck(spec: { send: Buffer; expect: Buffer }): ProbeCheck {
  const ex = sendExpectExchange(spec)
  return {
    name: 'send',
    describe: 'the --send bytes answered with the --expect prefix',
    open: (target, connectTimeoutMs) => new ProbeLink(target, { opening: ex, proof: ex }, connectTimeoutMs),
  }
}
