// What paired sessions' plain legs read, kept until the peer acknowledges it (channel.ts keeps a
// session's bytes from its read until the ACK: its credit, and what a resume replays).
//
// Node reads each socket into a buffer of its own, allocated per read: through a pair, V8 then
// counted every byte read as new external memory, and its full collections took a quarter of the
// near end's CPU in bulk. Here every plain leg reads (Node's `onread`) into one buffer, reused
// read after read, and each read is copied at once into a shared slab; a slab whose bytes were
// all acknowledged is reused. A slab still holding bytes of a session that ended is left to the
// garbage collector, never reused: a piece released too early would be written over, one never
// released only costs its slab.

/** Every plain leg of this thread reads into this, one read at a time (the event loop's). */
const READ_BYTES = 64 * 1024
const SLAB_BYTES = 1024 * 1024
/** Empty slabs kept for reuse beyond the one in use: what a burst leaves behind is bounded. */
const SPARE_SLABS = 4

interface Slab {
  readonly buffer: Buffer
  /** Pieces handed out and not yet released. */
  live: number
  /** Where the next piece goes. */
  used: number
}

export class ReadPool {
  readonly #read = Buffer.allocUnsafeSlow(READ_BYTES)
  /** Weak: a slab nothing views any more (its session ended with bytes unacknowledged) goes with its buffer. */
  readonly #slabs = new WeakMap<ArrayBufferLike, Slab>()
  readonly #spare: Slab[] = []
  #current: Slab | undefined

  /**
   * Node's `onread` option for a socket whose reads go to `take`, each a piece of a slab that is
   * the taker's until it is released (not a view of the read buffer: that is the next read's);
   * `take` returns false to stop reading (until the socket's resume()).
   */
  onread(take: (piece: Buffer) => boolean): { buffer: Buffer; callback: (n: number) => boolean } {
    const read = this.#read
    return { buffer: read, callback: (n: number): boolean => take(this.#copy(read, n)) }
  }

  #copy(read: Buffer, n: number): Buffer {
    let slab = this.#current
    if (slab === undefined || slab.used + n > SLAB_BYTES) {
      slab = this.#spare.pop() ?? this.#newSlab()
      this.#current = slab
    }
    const at = slab.used
    read.copy(slab.buffer, at, 0, n)
    slab.used += n
    slab.live++
    return slab.buffer.subarray(at, at + n)
  }

  #newSlab(): Slab {
    const slab = { buffer: Buffer.allocUnsafeSlow(SLAB_BYTES), live: 0, used: 0 }
    this.#slabs.set(slab.buffer.buffer, slab)
    return slab
  }

  /**
   * `piece` (one `onread` handed out, or a view of one) is not needed any more: acknowledged by
   * the peer, so written and sent. Once per piece handed out; a buffer not of this pool is ignored.
   */
  release(piece: Buffer): void {
    const slab = this.#slabs.get(piece.buffer)
    if (slab === undefined || slab.live === 0 || --slab.live > 0) return
    slab.used = 0
    if (slab !== this.#current && this.#spare.length < SPARE_SLABS) this.#spare.push(slab)
  }

  /** Empty slabs kept for reuse (tests). */
  get spare(): number {
    return this.#spare.length
  }
}

/** This thread's pool (a worker thread has its own). */
export const readPool = new ReadPool()
