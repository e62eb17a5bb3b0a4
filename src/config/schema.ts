// The shape of a config file, as a zod schema: one definition gives the types, the checks
// and the error paths (routes[1].targetKeepalive.idle) that name what to fix.

import { z } from 'zod'
import { PROFILE_NAMES } from '../keepalive/profiles.ts'
import { LIMITS } from '../keepalive/settings.ts'
import { heartbeatSchema } from './heartbeat.ts'
import { LOG_FORMATS, LOG_LEVELS } from './log.ts'
import { duration, seconds, whole } from './validate.ts'
import { MAX_BACKLOG } from './options.ts'

export const keepaliveSchema = z.strictObject({
  profile: z.enum(PROFILE_NAMES).optional(),
  idle: duration(whole(LIMITS.idle.min, LIMITS.idle.max)).optional(),
  interval: duration(whole(LIMITS.interval.min, LIMITS.interval.max)).optional(),
  count: whole(LIMITS.count.min, LIMITS.count.max).optional(),
  userTimeout: duration(z.number().min(LIMITS.userTimeout.min).max(LIMITS.userTimeout.max)).optional(),
})

const address = z.union([z.string().min(1), whole(0, 65535)])

export const routeSchema = z.strictObject({
  name: z.string().min(1).optional(),
  // A far end (pairListen) has no listen, a near end (pairConnect) no target: options.ts checks which.
  listen: address.optional(),
  target: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
  balance: z.enum(['first', 'roundrobin']).optional(),
  failback: z.enum(['auto', 'manual']).optional(),
  profile: z.enum(PROFILE_NAMES).optional(),
  keepalive: keepaliveSchema.optional(),
  clientKeepalive: keepaliveSchema.optional(),
  targetKeepalive: keepaliveSchema.optional(),
  // The same schema checks --heartbeat* flags; YAML's empty `heartbeat:` is null (none).
  heartbeat: heartbeatSchema.nullish(),
  maxConnections: whole(1, 10_000_000).optional(),
  backlog: whole(1, MAX_BACKLOG).optional(),
  connectTimeout: seconds(0.001).optional(),
  halfCloseTimeout: seconds(0.001).optional(),
  flushTimeout: seconds(0.001).optional(),
  pairListen: address.optional(),
  pairConnect: z.string().min(1).optional(),
  pairSecretFile: z.string().min(1).optional(),
  pairHeartbeat: seconds(0.05).optional(),
  resumeWindow: seconds(0.1).optional(),
})

export const adminSchema = z.union([
  z.string().min(1),
  z.strictObject({ listen: z.string().min(1), token: z.string().optional() }),
])

export const configSchema = z.strictObject({
  admin: adminSchema.optional(),
  shutdownGrace: seconds(0).optional(),
  pidFile: z.string().min(1).optional(),
  workers: z.union([z.literal('auto'), z.number().int()]).optional(),
  log: z.strictObject({ level: z.enum(LOG_LEVELS).optional(), format: z.enum(LOG_FORMATS).optional(), file: z.string().min(1).optional() }).optional(),
  routes: z.array(routeSchema).min(1),
})

export type KeepaliveConfig = z.infer<typeof keepaliveSchema>
export type RouteConfig = z.infer<typeof routeSchema>
export type ConfigFile = z.infer<typeof configSchema>
