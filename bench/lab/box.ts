// A box on the path that times out on data only, like a load balancer, a corporate proxy or a
// cloud database proxy: HAProxy in TCP mode inside the router namespace, `timeout client` and
// `timeout server` set, no keepalive of its own. TCP keepalive probes are answered by the box's
// kernel and never reach its timers, so a session idle for the timeout is closed by the box
// whatever keepalive its ends run; only data (a paired link's heartbeats) keeps it open.
// Each address behind the box gets a frontend of its own on the router's client-side address.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Lab } from './lab.ts'
import type { Endpoint } from './ss.ts'
import { waitForListening } from './ss.ts'
import type { Path } from './relays/relay.ts'
import { missingCommand } from './relays/command.ts'

/** The box's port for an address behind it: that address's port plus this. */
const PORT_OFFSET = 20000

export function boxUnavailable(): Promise<string | null> {
  return missingCommand('haproxy', ['-v'], 'haproxy')
}

export function boxConfig(front: Endpoint, to: Endpoint, timeoutSeconds: number): string {
  return `global
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client ${timeoutSeconds}s
  timeout server ${timeoutSeconds}s
listen box
  bind ${front.host}:${front.port}
  server s1 ${to.host}:${to.port}
`
}

export class DataTimeoutBox {
  readonly lab: Lab
  readonly timeoutSeconds: number
  private readonly fronts = new Map<string, Promise<Endpoint>>()

  constructor(lab: Lab, timeoutSeconds: number) {
    this.lab = lab
    this.timeoutSeconds = timeoutSeconds
  }

  /** The path through the box: each address gets its frontend once, started with the lab's processes. */
  readonly path: Path = to => {
    const key = `${to.host}:${to.port}`
    let front = this.fronts.get(key)
    if (front === undefined) {
      front = this.start(to)
      this.fronts.set(key, front)
    }
    return front
  }

  private async start(to: Endpoint): Promise<Endpoint> {
    const front = { host: this.lab.addresses.routerClientSide, port: to.port + PORT_OFFSET }
    const file = join(this.lab.tempDir('box'), 'haproxy.cfg')
    writeFileSync(file, boxConfig(front, to, this.timeoutSeconds))
    const proc = this.lab.spawn('router', 'box', 'haproxy', ['-db', '-f', file])
    await proc.readyWhen(waitForListening(this.lab.ns('router'), front.port, 10_000), 'listening')
    return front
  }
}
