// Which check serves which --check value. Adding a protocol: one module exporting a factory,
// one line here.

import type { ProbeCheck } from './check.ts'
import { echoCheck } from './echo.ts'
import { pgCheck } from './pg.ts'
import { redisCheck } from './redis.ts'
import { sendExpectCheck } from './send-expect.ts'

export interface CheckOptions {
  dsn: string | undefined
  send: Buffer | undefined
  expect: Buffer | undefined
}

export const PROBE_CHECKS: Record<string, (o: CheckOptions) => ProbeCheck | Promise<ProbeCheck>> = {
  echo: () => echoCheck(),
  redis: () => redisCheck(),
  // The options module makes sure both are there for this check.
  send: (o) => sendExpectCheck({ send: o.send!, expect: o.expect! }),
  pg: (o) => pgCheck({ dsn: o.dsn }),
}

export const PROBE_CHECK_NAMES = Object.keys(PROBE_CHECKS)
