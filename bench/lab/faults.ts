// Faults on demand. Each one imitates something that happens to real connections:
// - blackholeServer: the server's host or its network vanishes; packets are dropped in the
//   router, nothing answers, nobody is told (a dead host, a pulled cable, a NAT reboot).
// - blackholeClientSide: the app's side of the relay vanishes. App and relay share the client
//   namespace (a sidecar), so the drop is on the relay's listening ports, on input: a drop on
//   output would report an error to the sender's TCP and it would not behave as on a wire.
// - freezeServer: the server application hangs (SIGSTOP) while its kernel still answers TCP,
//   so keepalive sees a healthy peer; only an application-level check can tell.
// - resetServer: the server's kernel aborts its connections and sends RST (ss -K).
// - flushNat: the NAT forgets every flow at once (conntrack -F: a NAT reboot or failover, a full
//   table). With tcp_loose 0 the next packet of each flow is INVALID and dropped: every
//   connection through it is a silent blackhole; only new connections get through.
// - heal: removes every fault.

import type { Lab } from './lab.ts'
import { run } from './exec.ts'
import { signalAll } from './pids.ts'
import { missingCommand } from './relays/command.ts'

const CLIENT_FAULT_TABLE = 'kalab_faults'

/** Null when flushNat can run here (the conntrack command), otherwise what to install. */
export function natFlushUnavailable(): Promise<string | null> {
  return missingCommand('conntrack', ['--version'], 'conntrack')
}

export class Faults {
  private readonly lab: Lab
  private frozen: number[] = []

  constructor(lab: Lab) {
    this.lab = lab
  }

  async blackholeServer(): Promise<void> {
    const server = this.lab.addresses.server
    await this.lab.exec('router', 'nft', ['-f', '-'], {
      input: `add rule inet kalab faults ip daddr ${server} drop\nadd rule inet kalab faults ip saddr ${server} drop\n`
    })
  }

  /** Drops, in both directions, the app's traffic to and from the relays listening on `ports`. */
  async blackholeClientSide(ports: readonly number[]): Promise<void> {
    const set = `{ ${ports.join(', ')} }`
    await this.lab.exec('client', 'nft', ['-f', '-'], {
      input: `table inet ${CLIENT_FAULT_TABLE} {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport ${set} drop
    tcp sport ${set} drop
  }
}
`
    })
  }

  /** Stops every process in the server namespace (the app and, for PostgreSQL, its backends). */
  async freezeServer(): Promise<void> {
    const { stdout } = await run('ip', ['netns', 'pids', this.lab.ns('server')])
    const pids = stdout.split(/\s+/).filter(Boolean).map(Number)
    signalAll(pids, 'SIGSTOP')
    this.frozen.push(...pids)
  }

  thawServer(): void {
    signalAll(this.frozen, 'SIGCONT')
    this.frozen = []
  }

  /** The server's kernel aborts its established connections on `port` with an RST. */
  async resetServer(port: number): Promise<void> {
    await this.lab.exec('server', 'ss', ['-K', 'state', 'established', `( sport = :${port} )`])
  }

  async flushNat(): Promise<void> {
    await this.lab.exec('router', 'conntrack', ['-F'])
  }

  async heal(): Promise<void> {
    this.thawServer()
    await this.lab.exec('router', 'nft', ['flush', 'chain', 'inet', 'kalab', 'faults'])
    // Absent unless the client side was blackholed: a failure here means nothing to undo.
    await this.lab.exec('client', 'nft', ['delete', 'table', 'inet', CLIENT_FAULT_TABLE], { allowFail: true })
  }
}
