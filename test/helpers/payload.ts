// Random payloads and chunked writes, so relays are tested on arbitrary segment boundaries.

import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import type { Socket } from 'node:net'

export const payload = (size: number): Buffer => randomBytes(size)

/** Writes `data` in random slices of 1 B to `maxChunk`, honouring backpressure, then ends if asked. */
export async function writeChunked(socket: Socket, data: Buffer, options: { end: boolean; maxChunk?: number }): Promise<void> {
  const maxChunk = options.maxChunk ?? 65536
  let offset = 0
  while (offset < data.length) {
    const size = Math.min(data.length - offset, 1 + Math.floor(Math.random() * maxChunk))
    const ok = socket.write(data.subarray(offset, offset + size))
    offset += size
    if (!ok) await once(socket, 'drain')
  }
  if (options.end) socket.end()
}
