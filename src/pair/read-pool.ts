// What paired sessions' plain legs read, kept until the peer acknowledges it (channel.ts keeps a
// session's bytes from its read until the ACK: its credit, and what a resume replays).
//
// Node reads each socket into a buffer of its own, allocated per read: through a pair, V8 then
// counted every byte read as new external memory, and its full collections took a quarter of the
// near end's CPU in bulk. Here every plain leg reads (Node's `onread`, or the pump's reader once
// its session relays: pump-reader.ts) into one buffer, reused read after read, and each read is
// copied at once: a large one into a slab of that socket's own, a small one into Node's shared
// pool (Buffer.allocUnsafe: a view of a pool of Buffer.poolSize, 8 KiB on Node 22 and 64 KiB from
// 24, for pieces below half of it; nothing of its own to allocate and account: 4 % less CPU a
// paired round trip than a buffer of its own, December 2026). A piece kept
// unacknowledged keeps its pool, as any pooled Buffer does; the pieces read in the same moments
// share pools, and a session's unacknowledged bytes are bounded by its credit anyway (protocol.ts
// WINDOW). A slab whose bytes were all released (acknowledged by the peer) goes to a few spares,
// lent to whichever socket reads a large piece next. A slab holds one socket's bytes only, and a
// session's bytes are acknowledged in order: a stuck session holds its own unacknowledged bytes and
// one slab's slack, never another session's slabs. A slab still holding bytes of a session that
// ended is left to the garbage collector, never reused: a piece released too early would be written
// over, one never released only costs its slab.

/**
 * Every plain leg of this thread reads into this, one read at a time (the event loop's). 256 KiB
 * rather than Node's 64: bulk through a pair moved about 15 % more (reads of 2 GB, in turn).
 */
const READ_BYTES = 256 * 1024
/** Reads smaller than this get a buffer of their own: small reads are not the bulk that churns. */
const SMALL_READ = 16 * 1024
export const SLAB_BYTES = 1024 * 1024
/** Empty slabs kept for reuse: what a burst leaves behind is bounded (8 MiB). */
export const SPARE_SLABS = 8

interface Slab {
  readonly buffer: Buffer
  /** Pieces handed out and not yet released. */
  live: number
  /** Where the next piece goes. */
  used: number
  /** The socket reading into it, while it does. */
  reader: Reader | undefined
}

/** A socket reading through the pool: the slab its large reads go to. */
export interface Reader {
  slab: Slab | undefined
}

export class ReadPool {
  readonly #read = Buffer.allocUnsafeSlow(READ_BYTES)
  /** Weak: a slab nothing views any more (its session ended with bytes unacknowledged) goes with its buffer. */
  readonly #slabs = new WeakMap<ArrayBufferLike, Slab>()
  readonly #spare: Slab[] = []

  /**
   * Node's `onread` option for one socket, whose reads go to `take`: each a buffer that is the
   * taker's until it is released (not a view of the read buffer: that is the next read's);
   * `take` returns false to stop reading (until the socket's resume()).
   */
  onread(take: (piece: Buffer) => boolean): { buffer: Buffer; callback: (n: number) => boolean } {
    const read = this.#read
    const reader: Reader = { slab: undefined }
    return { buffer: read, callback: (n: number): boolean => take(this.#copy(reader, read, n)) }
  }

  /** For a socket read by something else (the pump: pump-reader.ts): the buffer to read into. */
  get buffer(): Buffer {
    return this.#read
  }

  /** The `n` bytes just read into `buffer` for `reader`, as `onread` hands them on. */
  copy(reader: Reader, n: number): Buffer {
    return this.#copy(reader, this.#read, n)
  }

  #copy(reader: Reader, read: Buffer, n: number): Buffer {
    if (n < SMALL_READ) {
      const own = Buffer.allocUnsafe(n)
      read.copy(own, 0, 0, n)
      return own
    }
    let slab = reader.slab
    if (slab === undefined || slab.used + n > SLAB_BYTES) {
      // The full one stays with its pieces until they are released.
      if (slab !== undefined) slab.reader = undefined
      slab = this.#spare.pop() ?? this.#newSlab()
      slab.reader = reader
      reader.slab = slab
    }
    const at = slab.used
    read.copy(slab.buffer, at, 0, n)
    slab.used += n
    slab.live++
    return slab.buffer.subarray(at, at + n)
  }

  #newSlab(): Slab {
    const slab: Slab = { buffer: Buffer.allocUnsafeSlow(SLAB_BYTES), live: 0, used: 0, reader: undefined }
    this.#slabs.set(slab.buffer.buffer, slab)
    return slab
  }

  /**
   * `piece` (one `onread` handed out, or a view of one) is not needed any more: acknowledged by
   * the peer, so written and sent. Once per piece handed out; a buffer not of a slab is ignored.
   */
  release(piece: Buffer): void {
    const slab = this.#slabs.get(piece.buffer)
    if (slab === undefined || slab.live === 0 || --slab.live > 0) return
    // Empty: off its socket (an idle session holds none) and to the spares.
    slab.used = 0
    if (slab.reader !== undefined) slab.reader.slab = undefined
    slab.reader = undefined
    if (this.#spare.length < SPARE_SLABS) this.#spare.push(slab)
  }

  /** Empty slabs kept for reuse (tests). */
  get spare(): number {
    return this.#spare.length
  }
}

/** This thread's pool (a worker thread has its own). */
export const readPool = new ReadPool()
