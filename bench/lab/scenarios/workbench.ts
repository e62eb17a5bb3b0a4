// The bench set up in a lab: one echo server and one app (client driver) shared by all relays,
// each relay with its own listening port and its own server port, so sockets and server events
// can be told apart per relay. Relays are started fresh for every scenario, so what one fault
// left behind cannot blur the next measurement.

import type { Lab } from '../lab.ts'
import { startEchoServer, type EchoServer } from '../echo.ts'
import { startClientDriver, type ClientDriver } from '../clients.ts'
import { heldSockets, type Endpoint } from '../ss.ts'
import type { Path, Relay, RelayOptions, RunningRelay } from '../relays/index.ts'
import { sleep } from '../exec.ts'

export interface Entrant {
  relay: Relay
  options: RelayOptions
}

interface Placed extends Entrant {
  listen: Endpoint
  target: Endpoint
}

export interface Deployed extends Placed {
  running: RunningRelay
  /** Tag prefix of this relay's sessions in this scenario. */
  group: string
  /** The app's groups holding them: `[group]`, or one per session (`<group>/<i>`) when opened separately. */
  sessionGroups: string[]
  opened: number
}

/** What one relay did in one scenario. Times are seconds since the scenario's reference moment. */
export interface Outcome {
  relay: string
  sessions: number
  /** When sessions stopped being usable (closed, or found dead), sorted. */
  ends: number[]
  /** How long the scenario watched. */
  window: number
  /** What the surviving peer saw when its session was closed: { rst: n, fin: n }. */
  peerSaw: Record<string, number>
  /** Sockets the relay still held afterwards (as `ss` lists them); null when there is no relay process. */
  socketsLeft: number | null
  /** Socket descriptors the relay still held afterwards beyond its listening ones; null when unknown. */
  descriptorsLeft: number | null
  /** The relay's own log lines for the ended sessions, when it writes them. */
  sessionLog: Array<Record<string, unknown>> | null
  /** A pair of relays: how many times the link between them went down; null for other relays. */
  linkDowns: number | null
}

const LISTEN_BASE = 15001
const SERVER_BASE = 7001

export class Workbench {
  readonly lab: Lab
  readonly echo: EchoServer
  readonly driver: ClientDriver
  readonly entrants: readonly Placed[]
  readonly sessions: number

  constructor(lab: Lab, echo: EchoServer, driver: ClientDriver, entrants: readonly Placed[], sessions: number) {
    this.lab = lab
    this.echo = echo
    this.driver = driver
    this.entrants = entrants
    this.sessions = sessions
  }

  /**
   * Starts every relay (or only those `which` accepts) and opens the sessions through each.
   * `separately` puts each session in a group of its own, so it can be checked on its own;
   * `path` is what stands between the relays and the server (a box), absent: nothing.
   */
  async deploy(scenario: string, which: (e: Entrant) => boolean = () => true, separately = false, path?: Path): Promise<Deployed[]> {
    const deployed: Deployed[] = []
    try {
      for (const e of this.entrants.filter(which)) {
        const running = await e.relay.start({ lab: this.lab, listen: e.listen, target: e.target, options: e.options, ...(path === undefined ? {} : { path }) })
        const group = `${e.relay.name}/${scenario}`
        const sessionGroups = separately ? Array.from({ length: this.sessions }, (_, i) => `${group}/${i}`) : [group]
        deployed.push({ ...e, running, group, sessionGroups, opened: 0 })
      }
      await Promise.all(deployed.map(async d => {
        const each = separately ? 1 : this.sessions
        const opened = await Promise.all(d.sessionGroups.map(g => this.driver.open(g, d.running.address, each)))
        d.opened = opened.reduce((sum, n) => sum + n, 0)
      }))
    } catch (err) {
      await this.withdraw(deployed)
      throw err
    }
    return deployed
  }

  /**
   * Removes faults, drops the app's sessions and stops the relays: every one of them, then
   * throws the first failure (a relay that did not stop cleanly fails the run).
   */
  async withdraw(deployed: readonly Deployed[]): Promise<void> {
    await this.lab.faults.heal()
    for (const d of deployed) for (const g of d.sessionGroups) await this.driver.destroy(g)
    const stops = await Promise.allSettled(deployed.map(d => d.running.stop()))
    const failed = stops.find((s): s is PromiseRejectedResult => s.status === 'rejected')
    if (failed !== undefined) throw failed.reason
  }

  /** Counts what the relay still holds. */
  async socketsLeft(d: Deployed): Promise<number | null> {
    if (!d.relay.proxies) return null
    return (await heldSockets(this.lab.ns('client'), await d.running.pids())).length
  }

  async outcome(d: Deployed, ends: number[], window: number, peerSaw: Record<string, number>): Promise<Outcome> {
    return {
      relay: d.relay.name,
      sessions: d.opened,
      ends: [...ends].sort((a, b) => a - b),
      window,
      peerSaw,
      socketsLeft: await this.socketsLeft(d),
      descriptorsLeft: (await d.running.descriptorsLeft?.()) ?? null,
      sessionLog: d.running.sessionLog?.() ?? null,
      linkDowns: d.running.linkDowns?.() ?? null
    }
  }
}

/** Sets up the echo server and the app for `entrants`, each with its own ports. */
export async function createWorkbench(lab: Lab, entrants: readonly Entrant[], sessions: number): Promise<Workbench> {
  const placed = entrants.map((e, i) => ({
    ...e,
    listen: { host: '127.0.0.1', port: LISTEN_BASE + i },
    target: { host: lab.addresses.server, port: SERVER_BASE + i }
  }))
  const echo = await startEchoServer(lab, placed.map(p => p.target.port))
  const driver = await startClientDriver(lab)
  return new Workbench(lab, echo, driver, placed, sessions)
}

/** Polls `done` until it is true or `deadline` (ms since epoch) passes. */
export async function waitUntil(done: () => boolean, deadline: number, pollMs = 100): Promise<void> {
  while (!done() && Date.now() < deadline) await sleep(pollMs)
}

export function tally(hows: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const how of hows) counts[how] = (counts[how] ?? 0) + 1
  return counts
}
