// Ports on this machine's loopback, outside the lab's namespaces: for servers that must be told a
// port number (PostgreSQL, redis, a relay under benchmark) rather than binding port 0 themselves.
//
// Such a port is free when chosen and taken only later, by the server told it: meanwhile someone
// else may take it. The kernel's own choice (bind to port 0) comes from the ephemeral range, the
// very range every outgoing connection and every other port-0 listener draws from, and tests
// running side by side open thousands of those (a proxy's admin port was once taken that way in
// CI). So the port is picked at random below that range, where only a listener told that same
// number could take it.

import net from 'node:net'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'

/** Ports below this are left alone: well-known services (PostgreSQL, redis...) live there. */
const LOWEST = 10_000
const ATTEMPTS = 20

/** The first port of the kernel's ephemeral range (net.ipv4.ip_local_port_range). */
function ephemeralStart(): number {
  try {
    const first = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    if (Number.isInteger(first) && first > 0) return first
  } catch {
    // Not Linux, or no /proc: the usual start.
  }
  return 32_768
}

/** Listens on 127.0.0.1:port and closes again; the port it got, or undefined when it is taken. */
async function tryPort(port: number): Promise<number | undefined> {
  const server = net.createServer()
  try {
    server.listen(port, '127.0.0.1')
    await once(server, 'listening')
    return (server.address() as net.AddressInfo).port
  } catch {
    return undefined
  } finally {
    await new Promise(resolve => server.close(resolve))
  }
}

/** A port nobody listens on now on 127.0.0.1 (free until someone takes it: see above). */
export async function freePort(): Promise<number> {
  const top = ephemeralStart()
  if (top - LOWEST > 1000) {
    for (let i = 0; i < ATTEMPTS; i++) {
      const port = await tryPort(LOWEST + Math.floor(Math.random() * (top - LOWEST)))
      if (port !== undefined) return port
    }
  }
  // A range set so low that nothing is left below it: the kernel's choice, as before.
  const port = await tryPort(0)
  if (port === undefined) throw new Error('no free port on 127.0.0.1')
  return port
}
