// `ka-proxy doctor`: proves on this machine that the keepalive options really land on a
// socket, by setting them on a loopback connection and reading them back.

import net, { type Socket } from 'node:net'
import { once } from 'node:events'
import { KeepaliveApplier } from './keepalive/socket-options.ts'
import { DEFAULT_KEEPALIVE, resolveKeepalive, describeKeepalive } from './keepalive/settings.ts'
import { VERSION, nodeSupport } from './version.ts'

export function nativeStatusLine(applier: KeepaliveApplier): string {
  return applier.native
    ? 'native socket helper: in use (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT; bytes move through its pump)'
    : `native socket helper: NOT in use (${applier.fallbackReason}); ` +
        'falling back to setKeepAlive: interval 1 s, count 10, no TCP_USER_TIMEOUT'
}

export async function runDoctor(write: (line: string) => void): Promise<number> {
  const applier = new KeepaliveApplier()
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
    const back = applier.read(socket)
    write(`read back with getsockopt: ${describeKeepalive(back)}, SO_KEEPALIVE ${back.enabled ? 'on' : 'off'}`)
    const ok =
      back.enabled &&
      back.idle === wanted.idle &&
      back.interval === wanted.interval &&
      back.count === wanted.count &&
      back.userTimeout === wanted.userTimeout
    write(ok ? 'ok' : 'MISMATCH: the kernel did not keep what was set')
    return ok ? 0 : 1
  } finally {
    socket.destroy()
    server.close()
  }
}
