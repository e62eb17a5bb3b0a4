// redis: PING answered with +PONG (or -NOAUTH: the server answered), once connected and again
// after the idle time: the heartbeat checker's exchange. Redis keeps idle clients unless its
// `timeout` is set; a close it makes then is silent, like a box on the path.

import { PING_EXCHANGE } from '../heartbeat/redis.ts'
import { ProbeLink, type ProbeCheck } from './check.ts'

export function redisCheck(): ProbeCheck {
  return {
    name: 'redis',
    describe: 'Redis PING answered with +PONG',
    open: (target, connectTimeoutMs) => new ProbeLink(target, { opening: PING_EXCHANGE, proof: PING_EXCHANGE }, connectTimeoutMs),
  }
}
