// Filling the path to a peer that does not read, and telling how a socket really ended: for the
// tests of what a proxy delivers when a peer fails behind backpressure.

import type { Socket } from 'node:net'
import type { SocketControl } from '../../src/socket-control.ts'
import { endOf, sleep, waitFor } from './net.ts'
import { payload } from './payload.ts'

const CHUNK = 64 * 1024
const TCP_CLOSE = 7

/**
 * Writes from `from` until the path to a peer that does not read is full, every write handed to
 * the kernel; returns what was written and how much of it the peer's kernel acknowledged (the
 * bytes a direct connection would deliver before an RST).
 */
export async function fillPath(from: Socket, sockets: SocketControl): Promise<{ data: Buffer; acked: number }> {
  const data = payload(64 << 20)
  const unacked = (): number => sockets.sendQueueBytes(from) ?? -1
  let handed = 0
  for (;;) {
    await new Promise<void>((resolve) => from.write(data.subarray(handed, handed + CHUNK), () => resolve()))
    handed += CHUNK
    if (!(await waitFor(() => unacked() === 0, 300, 5))) break // the peer's window is closed
    if (handed >= data.length) throw new Error('the path never filled')
  }
  // Stable: zero-window probes may still be answered for a moment.
  let last = -1
  while (unacked() !== last) {
    last = unacked()
    await sleep(200)
  }
  return { data: data.subarray(0, handed), acked: handed - last }
}

/**
 * How a socket ended: 'end' for a FIN, or the error code (ECONNRESET for an RST). libuv reports
 * an RST that arrived behind unread bytes as a plain end of stream (POLLHUP after a short read):
 * the kernel's state tells them apart (CLOSE after a reset, CLOSE_WAIT after a FIN).
 */
export async function endSeen(socket: Socket, sockets: SocketControl): Promise<string> {
  const end = await endOf(socket)
  return end === 'end' && sockets.tcpInfo(socket).state === TCP_CLOSE ? 'ECONNRESET' : end
}

/** Everything a socket receives until it ends, and how it ended (see endSeen). */
export function drain(socket: Socket, sockets: SocketControl): Promise<{ received: Buffer; end: string }> {
  const chunks: Buffer[] = []
  socket.on('data', (c: Buffer) => chunks.push(c))
  return endSeen(socket, sockets).then((end) => ({ received: Buffer.concat(chunks), end }))
}
