// Every route setting has one place in RawOptions, a path such as ['keepalive', 'client', 'idle'],
// and from it two names: its flag (--client-idle) and its key in a config file's route
// (clientKeepalive.idle). An error names whichever the value came from.

import { HEARTBEAT_FLAGS, type HeartbeatKey } from './heartbeat.ts'
import type { RawOptions } from './options.ts'
import type { RouteConfig } from './schema.ts'

/** The two legs of a session. */
export const LEGS = ['client', 'target'] as const
export type Leg = (typeof LEGS)[number]

/** Keepalive given for both legs (shared), or for one leg over the shared values. */
export const KEEPALIVE_SCOPES = ['shared', ...LEGS] as const
export type KeepaliveScope = (typeof KEEPALIVE_SCOPES)[number]

/** What each scope takes: a profile, and explicit values on top of it. */
export const KEEPALIVE_FIELDS = ['idle', 'interval', 'count', 'userTimeout', 'profile'] as const
export type KeepaliveField = (typeof KEEPALIVE_FIELDS)[number]

/** Where each scope sits in a config file's route. */
export const FILE_GROUP = { shared: 'keepalive', client: 'clientKeepalive', target: 'targetKeepalive' } as const

type TopKey = Exclude<keyof RawOptions, 'keepalive' | 'heartbeat'>

export type SettingPath =
  | readonly [TopKey]
  | readonly ['keepalive', KeepaliveScope, KeepaliveField]
  /** A key of the heartbeat block; an unknown one too, to name it in the error. */
  | readonly ['heartbeat', string]

/** Names a setting in an error: its flag, or where it sits in a config file. */
export type KeyNamer = (path: SettingPath) => string

const kebab = (name: string): string => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)

/** --connect-timeout, --idle, --client-user-timeout, --heartbeat-fall, --on-down */
export function flagOf(path: SettingPath): string {
  if (path[0] === 'keepalive') return `--${path[1] === 'shared' ? '' : `${path[1]}-`}${kebab(path[2])}`
  if (path[0] === 'heartbeat') return HEARTBEAT_FLAGS[path[1] as HeartbeatKey] ?? `--heartbeat-${kebab(path[1])}`
  return `--${kebab(path[0])}`
}

/** connectTimeout, keepalive.idle, clientKeepalive.userTimeout, heartbeat.fall, heartbeat.onDown */
export function routeKeyOf(path: SettingPath, route: RouteConfig): string {
  if (path[0] === 'heartbeat') return `heartbeat.${path[1]}`
  if (path[0] !== 'keepalive') return path[0]
  const [, scope, field] = path
  // A route's shared profile may be written `profile:` or `keepalive: {profile:}`.
  if (scope === 'shared' && field === 'profile' && route.keepalive?.profile === undefined) return 'profile'
  return `${FILE_GROUP[scope]}.${field}`
}

/** The value a setting has in `raw` (undefined: not given). */
export function valueAt(raw: RawOptions, path: SettingPath): unknown {
  if (path[0] === 'keepalive') return raw.keepalive?.[path[1]]?.[path[2]]
  if (path[0] === 'heartbeat') return (raw.heartbeat as Record<string, unknown> | undefined)?.[path[1]]
  return raw[path[0]]
}

/** Every setting `raw` gives a value, as [path, value]. */
export function givenSettings(raw: RawOptions): Array<[SettingPath, unknown]> {
  const out: Array<[SettingPath, unknown]> = []
  for (const [key, value] of Object.entries(raw) as Array<[keyof RawOptions, unknown]>) {
    if (key === 'keepalive') {
      for (const scope of KEEPALIVE_SCOPES) {
        for (const field of KEEPALIVE_FIELDS) out.push([['keepalive', scope, field], raw.keepalive?.[scope]?.[field]])
      }
    } else if (key === 'heartbeat') {
      if (typeof value === 'object' && value !== null) for (const [k, v] of Object.entries(value)) out.push([['heartbeat', k], v])
    } else {
      out.push([[key], value])
    }
  }
  return out.filter(([, value]) => value !== undefined)
}
