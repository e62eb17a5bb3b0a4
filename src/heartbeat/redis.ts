// redis: PING answered with +PONG. A server that requires a password answers -NOAUTH (or
// -NOPERM under an ACL without PING): it is answering, so it counts as up. Any other
// error (-LOADING, -MASTERDOWN, protected mode's -DENIED) means it cannot serve yet.

import { exchange, showBytes, type Checker, type Exchange } from './checker.ts'

const PING = Buffer.from('*1\r\n$4\r\nPING\r\n')
const UP = /^(\+PONG|-NOAUTH\b|-NOPERM\b)/

/** PING and how its answer is judged; `ka-proxy probe --check redis` sends the same. */
export const PING_EXCHANGE: Exchange = {
  request: PING,
  judge(reply) {
    const end = reply.indexOf('\r\n')
    if (end < 0) return 'more'
    const line = reply.subarray(0, end)
    return UP.test(line.toString('latin1')) ? 'up' : { bad: `expected +PONG, got ${showBytes(line)}` }
  },
}

export function redisChecker(): Checker {
  return { check: (target, signal) => exchange(target, signal, PING_EXCHANGE) }
}
