// `ka-proxy doctor`: proves on this machine that the socket options ka-proxy sets on its legs
// (src/socket-control.ts) really land on a socket, by setting them on a loopback connection and
// reading them back.

import net, { type Socket } from 'node:net'
import { once } from 'node:events'
import { noDelay, SocketControl } from './socket-control.ts'
import { DEFAULT_KEEPALIVE, resolveKeepalive, describeKeepalive } from './keepalive/settings.ts'
import { VERSION, nodeSupport } from './version.ts'

export function nativeStatusLine(applier: SocketControl): string {
  return applier.native
    ? 'native socket helper: in use (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT; bytes move through its pump; pair links seal their records with it)'
    : `native socket helper: NOT in use (${applier.fallbackReason}); ` +
        'falling back to setKeepAlive: interval 1 s, count 10, no TCP_USER_TIMEOUT'
}

export async function runDoctor(write: (line: string) => void): Promise<number> {
  const applier = new SocketControl()
  write(`ka-proxy ${VERSION} on Node ${process.version}, ${process.platform}-${process.arch}`)
  write(`Node ${process.version}: ${nodeSupport()}`)
  write(nativeStatusLine(applier))
  const wanted = resolveKeepalive(DEFAULT_KEEPALIVE)
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  const socket: Socket = net.connect(port, '127.0.0.1')
  try {
    await once(socket, 'connect')
    const applied = applier.apply(socket, wanted)
    write(`applied to a loopback socket: ${describeKeepalive(applied)}`)
    if (!applier.native) return 1
    noDelay(socket)
    applier.urgentInline(socket)
    const { back, differs } = applier.check(socket, wanted)
    const flags = applier.flags(socket)
    if (!flags.noDelay) differs.push('TCP_NODELAY')
    if (!flags.urgentInline) differs.push('SO_OOBINLINE')
    const onOff = (on: boolean): string => (on ? 'on' : 'off')
    write(`read back with getsockopt: ${describeKeepalive(back)}, SO_KEEPALIVE ${onOff(back.enabled)}`)
    write(`also read back: TCP_NODELAY ${onOff(flags.noDelay)}, SO_OOBINLINE ${onOff(flags.urgentInline)}`)
    write(differs.length === 0 ? 'ok' : `MISMATCH: the kernel did not keep what was set (${differs.join(', ')})`)
    return differs.length === 0 ? 0 : 1
  } finally {
    socket.destroy()
    server.close()
  }
}
