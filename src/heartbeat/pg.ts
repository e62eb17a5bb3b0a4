// pg: PostgreSQL answers an SSLRequest with 'S' or 'N'. No credentials are needed, and the
// answer comes from a backend the postmaster forked for us, so a hung (or SIGSTOPped)
// postmaster fails it while its kernel still accepts the connection. Closing right after
// the answer leaves nothing in the server's log.

import { exchange, showBytes, type Checker, type Exchange } from './checker.ts'

/** Length 8, then the request code 80877103 (1234 << 16 | 5679). */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
const YES = 0x53 // 'S'
const NO = 0x4e // 'N'

/** An SSLRequest answered 'S' or 'N'; `ka-proxy probe --check pg` without a login sends the same. */
export const SSL_REQUEST_EXCHANGE: Exchange = {
  request: SSL_REQUEST,
  judge: (reply) =>
    reply[0] === YES || reply[0] === NO ? 'up' : { bad: `expected 'S' or 'N' to an SSLRequest, got ${showBytes(reply)}` },
}

export function pgChecker(): Checker {
  return { check: (target, signal) => exchange(target, signal, SSL_REQUEST_EXCHANGE) }
}
