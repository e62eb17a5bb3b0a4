// redis: PING answered with +PONG (or -NOAUTH: the server answered), once connected and again
// after the idle time: the heartbeat checker's exchange. Redis keeps idle clients unless its
// `timeout` is set, and then closes them silently, like a box on the path would; so the probe
// asks for it first (CONFIG GET timeout) and counts closes at or after it as the server's.

import { exchange, type Exchange } from '../heartbeat/checker.ts'
import { PING_EXCHANGE } from '../heartbeat/redis.ts'
import { ProbeLink, type ProbeCheck, type ProbeTarget } from './check.ts'

const CONFIG_GET_TIMEOUT = Buffer.from('*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$7\r\ntimeout\r\n')
/** The reply: an array of name and value, `*2 $7 timeout $N <seconds>`. */
const TIMEOUT_REPLY = /^\*2\r\n\$7\r\ntimeout\r\n\$\d+\r\n(\d+)\r\n/

/** Redis's `timeout` in seconds; undefined when 0 (off) or when the server will not say (ACL, renamed CONFIG). */
async function redisTimeout(target: ProbeTarget, timeoutMs: number): Promise<number | undefined> {
  let seconds: number | undefined
  const ask: Exchange = {
    request: CONFIG_GET_TIMEOUT,
    judge(reply) {
      if (reply[0] === 0x2d) return 'up' // -NOPERM, -NOAUTH, -ERR: not told
      const m = TIMEOUT_REPLY.exec(reply.toString('latin1'))
      if (!m) return 'more'
      seconds = Number(m[1])
      return 'up'
    },
  }
  try {
    await exchange(target, AbortSignal.timeout(timeoutMs), ask)
  } catch {
    return undefined
  }
  return seconds !== undefined && seconds > 0 ? seconds : undefined
}

export function redisCheck(): ProbeCheck {
  return {
    name: 'redis',
    describe: 'Redis PING answered with +PONG',
    serverLimit: "Redis closes clients idle longer than its 'timeout' setting",
    serverIdleLimit: redisTimeout,
    open: (target, connectTimeoutMs) => new ProbeLink(target, { opening: PING_EXCHANGE, proof: PING_EXCHANGE }, connectTimeoutMs),
  }
}
