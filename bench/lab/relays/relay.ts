// What the lab needs to know about a relay (ka-proxy or a peer it is compared with): how to
// start it between the app and the server with given keepalive settings, where the app then
// connects, and which processes hold its sockets. One file per relay, registered in index.ts.

import type { Lab } from '../lab.ts'
import type { Endpoint } from '../ss.ts'

/** Keepalive of one leg, in seconds and probes (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT). */
export interface KeepaliveSettings {
  idle: number
  interval: number
  count: number
}

export interface RelayOptions {
  /** Keepalive on the target leg, the one crossing the NAT. */
  target: KeepaliveSettings
  /** Keepalive on the client leg, toward the app. */
  client: KeepaliveSettings
  /**
   * TCP_USER_TIMEOUT in seconds on the target leg: undefined leaves the relay's own default
   * (ka-proxy: idle + interval × count; the peers: none), 0 disables it.
   */
  userTimeout?: number
  /**
   * Seconds the old process of a relay's own upgrade may keep its sessions (HAProxy's
   * hard-stop-after); undefined: as long as they last.
   */
  hardStopAfter?: number
  /** Paired mode (ka-proxy-pair): --pair-heartbeat, seconds; undefined: its default. */
  pairHeartbeat?: number
  /** Paired mode (ka-proxy-pair): --resume-window, seconds; undefined: its default. */
  resumeWindow?: number
}

export interface RelayStart {
  lab: Lab
  /** Where the relay listens, in the client namespace. */
  listen: Endpoint
  /** The server it relays to, across the NAT. */
  target: Endpoint
  options: RelayOptions
  /**
   * What stands on the path across the NAT (a box of the lab's): maps an address the relay
   * connects to across it to the address to connect to instead. Absent: a straight path.
   */
  path?: Path
}

export type Path = (to: Endpoint) => Promise<Endpoint>

/** Where a relay connects to reach `to` across the NAT, on `ctx`'s path. */
export async function across(ctx: Pick<RelayStart, 'path'>, to: Endpoint): Promise<Endpoint> {
  return ctx.path === undefined ? to : await ctx.path(to)
}

/**
 * `ctx` for a relay whose target leg is what crosses the NAT: its target is where the path leads
 * (a box in front of the server, or the server itself).
 */
export async function targetAcross(ctx: RelayStart): Promise<RelayStart> {
  if (ctx.path === undefined) return ctx
  const { path, ...rest } = ctx
  return { ...rest, target: await path(ctx.target) }
}

/** What a relay's configuration is made of: the lab's start context without the lab. */
export type RelayConfig = Pick<RelayStart, 'listen' | 'target' | 'options'>

export interface RunningRelay {
  /** Where the app connects: the relay, or the server itself for a direct connection. */
  address: Endpoint
  /** Processes that hold the relay's sockets now; empty when there is no relay process. */
  pids(): Promise<number[]>
  /**
   * Socket descriptors the relay's processes hold beyond those they held once listening
   * (read from /proc, so a reset socket whose descriptor is still open counts), when known.
   */
  descriptorsLeft?(): Promise<number>
  /** The relay's structured log of ended sessions, when it writes one. */
  sessionLog?(): Array<Record<string, unknown>>
  /** A pair of relays: how many times the link between them went down so far (seen at the near end). */
  linkDowns?(): number
  /**
   * The relay's own upgrade or restart, as its operators do it (see Relay.upgradeHow); resolves
   * once the new generation serves. Stop and pids() cover both generations from then on.
   */
  upgrade?(): Promise<void>
  /** After an upgrade: whether a process of the old generation still runs (holding sessions). */
  oldGenerationRunning?(): boolean
  stop(): Promise<void>
}

export interface Relay {
  name: string
  /** True for relays that are processes in the path; false for the direct connection. */
  proxies: boolean
  /** Null when the relay can run here, otherwise why not, in a few words. */
  unavailable(): Promise<string | null>
  start(ctx: RelayStart): Promise<RunningRelay>
  /** How it upgrades or restarts itself (its running relay then has `upgrade`); absent: it does not. */
  upgradeHow?(options: RelayOptions): string
}

/** The bound a relay promises for detecting a dead peer on one leg, in seconds. */
export function keepaliveBound(k: KeepaliveSettings): number {
  return k.idle + k.interval * k.count
}
