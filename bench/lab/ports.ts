// Ports on this machine's loopback, outside the lab's namespaces: for servers that must be told a
// port number (PostgreSQL, redis, a relay under benchmark) rather than binding port 0 themselves.

import net from 'node:net'
import { once } from 'node:events'

/** A port nobody listens on now on 127.0.0.1, chosen by the kernel (free until someone takes it). */
export async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  await new Promise(resolve => server.close(resolve))
  return port
}
