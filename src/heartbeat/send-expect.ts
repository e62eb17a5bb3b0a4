// send/expect: any other protocol. Writes the user's bytes (none: wait for the server to
// speak first, as SMTP or SSH do) and wants the reply to start with the expected bytes.

import { exchange, showBytes, type Checker, type Exchange } from './checker.ts'

/** The user's bytes and the reply prefix they want; `ka-proxy probe --check send` uses the same. */
export function sendExpectExchange(spec: { send: Buffer; expect: Buffer }): Exchange {
  const { send, expect } = spec
  return {
    request: send,
    judge(reply) {
      const n = Math.min(reply.length, expect.length)
      if (!reply.subarray(0, n).equals(expect.subarray(0, n))) {
        return { bad: `expected a reply starting ${showBytes(expect)}, got ${showBytes(reply)}` }
      }
      return n < expect.length ? 'more' : 'up'
    },
  }
}

export function sendExpectChecker(spec: { send: Buffer; expect: Buffer }): Checker {
  const ex = sendExpectExchange(spec)
  return { check: (target, signal) => exchange(target, signal, ex) }
}
