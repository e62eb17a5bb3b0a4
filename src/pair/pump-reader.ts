// A paired session's plain leg read by the byte pump (native/ka_pump.c) instead of Node's stream:
// its socket in the pump's epoll set, each read into the read pool's buffer (read-pool.ts) and
// handed on with one plain call, where Node's read path costs a callback scope per read (its
// async context, microtasks and next ticks, then the stream's onread). A paired round trip (rr32,
// Node 24, December 2026, runs with and without it in turn) cost both ends together 1.7 µs of
// user-space CPU less over eight pairs of runs, 3.3 µs less over four more: 5-9 % of it.
//
// The socket stays Node's for everything else (writes, FIN, reset, close, its options); Node just
// never reads it. The pump reads a duplicate of its descriptor, so a descriptor number Node closes
// (and the kernel gives to a new socket) is never read by mistake; the duplicate is closed when
// Node's socket closes (or before the session destroys it), and only then does the socket end.
// End of stream and read errors are the pump's to find, and are told to Node's socket as its own
// reads would have: its readable side ends ('end'), or it is destroyed with the error.

import type { Socket } from 'node:net'
import { errnoName } from '../errors.ts'
import { EV_DATA, EV_EOF, EV_ERROR, loadNative, RELAY_READER, type NativeRelay } from '../native.ts'
import { readPool, type Reader } from './read-pool.ts'

/** What a reader hands on. */
export interface PumpReadSink {
  /** A piece read: the sink's until it releases it (read-pool.ts); the sink pauses the reader when it wants no more. */
  onPumpRead(piece: Buffer): void
  /** The sink threw (a bug): its session fails, nothing else. */
  onPumpFault(err: unknown): void
}

export class PumpReader implements Reader {
  readonly #socket: Socket
  readonly #sink: PumpReadSink
  readonly #relay: NativeRelay
  /** The read pool's slab of this socket (Reader). */
  slab: Reader['slab'] = undefined
  #paused = true
  #closed = false

  private constructor(socket: Socket, sink: PumpReadSink, fd: number) {
    const native = loadNative()
    if (!native.ok) throw new Error(native.reason)
    this.#socket = socket
    this.#sink = sink
    // Node reads no more: what arrives waits in the kernel for the pump.
    socket.pause()
    this.#relay = new native.binding.Relay(fd, this, pumpReaderEvent, RELAY_READER, readPool.buffer)
  }

  /**
   * A reader of `socket` (connected, its descriptor `fd`), paused; undefined without the native
   * helper or when the pump cannot take it (Node goes on reading it then).
   */
  static open(socket: Socket, sink: PumpReadSink, fd: number | undefined): PumpReader | undefined {
    if (fd === undefined || !loadNative().ok) return undefined
    try {
      return new PumpReader(socket, sink, fd)
    } catch {
      return undefined
    }
  }

  get paused(): boolean {
    return this.#paused
  }

  start(): void {
    if (this.#closed) return
    this.#paused = false
    this.#relay.start()
  }

  pause(): void {
    if (this.#closed) return
    this.#paused = true
    this.#relay.pause()
  }

  /** Out of the pump, its duplicate closed (the socket is Node's alone). Idempotent. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#relay.destroy(0)
  }

  /** The pump's event: a read, the end of the stream, or the socket's error (after all it had received). */
  onEvent(kind: number, n: number): void {
    if (this.#closed) return
    try {
      if (kind === EV_DATA) {
        this.#sink.onPumpRead(readPool.copy(this, n))
        return
      }
      const s = this.#socket
      if (kind === EV_EOF) {
        // Node's readable side ends as if it had read the end itself: 'end', readableEnded, and
        // the socket closes once its own FIN is out as well.
        this.close()
        s.push(null)
        s.read(0)
      } else if (kind === EV_ERROR) {
        this.close()
        const code = errnoName(n)
        s.destroy(Object.assign(new Error(`read ${code}`), { errno: -n, code, syscall: 'read' }))
      }
    } catch (err) {
      this.#sink.onPumpFault(err)
    }
  }
}

function pumpReaderEvent(this: PumpReader, kind: number, _leg: number, n: number): void {
  this.onEvent(kind, n)
}
