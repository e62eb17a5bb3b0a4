// echo: the default check, against `ka-proxy probe-server` (or any echo service) running next
// to the server. The responder never closes an idle connection by itself, so whatever ends a
// connection is on the path. A line is sent once connected and again after the idle time;
// the connection is alive when it comes back.

import { showBytes, type Exchange } from '../heartbeat/checker.ts'
import { ProbeLink, type ProbeCheck } from './check.ts'

const LINE = Buffer.from('ka-proxy probe\n')

const ECHO: Exchange = {
  request: LINE,
  judge(reply) {
    const n = Math.min(reply.length, LINE.length)
    if (!reply.subarray(0, n).equals(LINE.subarray(0, n))) return { bad: `not an echo: ${showBytes(reply)}` }
    return n < LINE.length ? 'more' : 'up'
  },
}

export function echoCheck(): ProbeCheck {
  return {
    name: 'echo',
    describe: 'a line echoed by ka-proxy probe-server',
    open: (target, connectTimeoutMs) => new ProbeLink(target, { opening: ECHO, proof: ECHO }, connectTimeoutMs),
  }
}
