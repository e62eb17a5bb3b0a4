// Which checker serves which kind of check. Adding a protocol: one module exporting a
// factory, one line here, one member of CheckSpec.

import type { Checker } from './checker.ts'
import type { CheckSpec } from '../config/heartbeat.ts'
import { httpChecker } from './http.ts'
import { pgChecker } from './pg.ts'
import { redisChecker } from './redis.ts'
import { sendExpectChecker } from './send-expect.ts'
import { tcpChecker } from './tcp.ts'

type Factories = { [K in CheckSpec['type']]: (spec: Extract<CheckSpec, { type: K }>) => Checker }

const CHECKERS: Factories = {
  tcp: tcpChecker,
  pg: pgChecker,
  redis: redisChecker,
  http: httpChecker,
  send: sendExpectChecker,
}

export function createChecker(spec: CheckSpec): Checker {
  return (CHECKERS[spec.type] as (spec: CheckSpec) => Checker)(spec)
}
