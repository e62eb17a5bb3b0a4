// How a paired session's plain leg and a link's records are written: while Node queues nothing
// for the socket, straight to the kernel with one send(2) (native/ka_send.c), since Node's stream
// path (its write request, completion callback and bookkeeping) cost a paired round trip more
// than the system call; what the kernel did not take goes through Node's socket as any write,
// after nothing else, so in order. A failure is Node's to report: its own write meets it again.

import type { Socket } from 'node:net'
import { loadNative } from '../native.ts'

/**
 * Writes `buffer` to `socket` (`fd`: its descriptor; undefined: through Node only). 'kernel' when
 * the kernel took it all at once (`written` is not called); else what Node's write of the rest
 * returned (false: backpressure), `written` called once that write completed.
 */
export function writeDirect(socket: Socket, fd: number | undefined, buffer: Buffer, written?: () => void): 'kernel' | boolean {
  const native = loadNative()
  if (fd !== undefined && native.ok && socket.writableLength === 0 && !socket.connecting && !socket.writableEnded) {
    const n = native.binding.sendSome(fd, buffer)
    if (n === buffer.length) return 'kernel'
    if (n > 0) buffer = buffer.subarray(n)
  }
  return socket.write(buffer, written)
}
