// The link's sealed records. TLS authenticates a link and agrees its keys; the frames then travel
// outside it, on the same TCP connection, in records sealed with AES-256-GCM under keys exported
// from that TLS session (link.ts has the switch). Why: Node's TLS socket hands on 16 KiB pieces,
// each through its own stream layer and its own ArrayBuffer: a relay of two Node processes over
// TLS moved 130-170 MB/s where one sealing each read in an AES-GCM record moved 370 (same run),
// and that churn made the full garbage collections every ~100 ms behind the pair's tail latency.
// A record here is a whole batch of frames (all a turn of the event loop sent, up to MAX_RECORD),
// sealed in one call into a ring the link reuses (SealRing) and written in one system call; read
// from a plain socket into one reused buffer, and deciphered as its reads arrive into a buffer
// reused record after record (RecordReader). Buffers allocated per read and per record had V8's
// full collections take a quarter of each end's CPU; reused, bulk through a pair went from about
// 190 to 450 MB/s.
//
// A record: [length u32 BE][ciphertext][tag, 16 bytes]; the length is the plaintext's (1 to
// MAX_RECORD) and is authenticated as the additional data. The nonce is the direction's IV with
// the record's sequence number XORed into its last 8 bytes, as in TLS 1.3 (RFC 8446 5.3): each
// direction has its own key and IV, so no nonce repeats under a key, and a record replayed,
// dropped, reordered or altered fails the tag of the record it stands in for. A failed tag ends
// the link (its sessions resume on a new one, like after any link death). Past KEY_UPDATE_BYTES
// under one key (AES-GCM's safe volume, RFC 8446 5.5: about 2^38 bytes; this is 2^35) both ends
// move that direction to the next key, HKDF of the last, at the same record: no message needed.
// The sealing is the native helper's (native/ka_aead.c: one call per record sealed, a few per
// record opened, with OpenSSL's AES-256-GCM); records are only used where the helper is, since
// leaving TLS needs it too.

import { hkdfSync } from 'node:crypto'
import { loadNative, type NativeAead } from '../native.ts'

export const KEY_BYTES = 32
export const IV_BYTES = 12
export const TAG_BYTES = 16
export const RECORD_HEADER = 4
/** The largest plaintext a record carries: a sender seals what it has before it would pass this. */
export const MAX_RECORD = 1024 * 1024
/**
 * The most pieces a record is sealed from (a frame is one or two): a turn in which thousands of
 * sessions each acknowledge makes several records, within the helper's bound of 4096 a call.
 */
export const MAX_RECORD_PIECES = 1024
export const KEY_UPDATE_BYTES = 2 ** 35
const KEY_UPDATE_INFO = 'ka-proxy pair key update'

/** One direction's key schedule: key, IV, the next record's number and the bytes under this key. */
export class RecordKeys {
  #key: Buffer
  #aead: NativeAead
  readonly #seal: boolean
  readonly #iv: Buffer
  readonly #nonce = Buffer.alloc(IV_BYTES)
  #seq = 0
  #bytesUnderKey = 0
  readonly #updateBytes: number

  /**
   * `seal`: this end seals with it (else opens); `updateBytes`: the key changes after this many
   * plaintext bytes (tests make it small). Throws without the native helper.
   */
  constructor(key: Buffer, iv: Buffer, seal: boolean, updateBytes = KEY_UPDATE_BYTES) {
    if (key.length !== KEY_BYTES || iv.length !== IV_BYTES) throw new Error('a record key is 32 bytes and its IV 12')
    this.#key = Buffer.from(key)
    this.#iv = Buffer.from(iv)
    this.#seal = seal
    this.#aead = newAead(this.#key, seal)
    this.#updateBytes = updateBytes
  }

  /** The cipher and nonce of the next record of `length` plaintext bytes; the schedule moves past it. */
  next(length: number): [aead: NativeAead, nonce: Buffer] {
    const aead = this.#aead
    const nonce = this.#nonce
    this.#iv.copy(nonce)
    const seq = this.#seq++
    // The sequence number is below 2^53 (a number): high and low 32 bits, XORed into bytes 4..11.
    nonce.writeUInt32BE((nonce.readUInt32BE(4) ^ Math.floor(seq / 2 ** 32)) >>> 0, 4)
    nonce.writeUInt32BE((nonce.readUInt32BE(8) ^ seq) >>> 0, 8)
    this.#bytesUnderKey += length
    if (this.#bytesUnderKey >= this.#updateBytes) {
      this.#key = Buffer.from(hkdfSync('sha256', this.#key, Buffer.alloc(0), KEY_UPDATE_INFO, KEY_BYTES))
      this.#aead = newAead(this.#key, this.#seal)
      this.#bytesUnderKey = 0
    }
    return [aead, nonce]
  }
}

function newAead(key: Buffer, seal: boolean): NativeAead {
  const native = loadNative()
  if (!native.ok) throw new Error(`sealed records need the native helper: ${native.reason}`)
  return new native.binding.Aead(key, seal)
}

/**
 * Where a link seals its records: one buffer used as a ring, each record's bytes held from its
 * seal until its write completed (the socket's write callbacks come in order, so the oldest
 * record is the one released). A buffer allocated per record made a link's bulk spend a quarter
 * of its CPU in V8's full collections (its external memory) and more in page faults. A record
 * that does not fit (the socket holds more than the ring: a slow path) gets a buffer of its own.
 * One per link: when the link dies, its ring goes with it, whatever its writes' callbacks do.
 */
export class SealRing {
  #ring: Buffer | undefined
  /** The records held, oldest first: where each starts in the ring (the oldest's start bounds the room). */
  readonly #starts: number[] = []
  /** Where the next record goes. */
  #head = 0

  /** Room for `size` bytes: a view of the ring, or a buffer of its own when the ring has none (`holds` tells which). */
  take(size: number): Buffer {
    const ring = (this.#ring ??= Buffer.allocUnsafeSlow(SEAL_RING_BYTES))
    if (this.#starts.length === 0) this.#head = 0
    const tail = this.#starts[0] ?? 0
    let at = -1
    if (this.#head >= tail) {
      // Not wrapped: after the newest record, else from the ring's start up to the oldest.
      if (this.#head + size <= ring.length) at = this.#head
      else if (size < tail) at = 0
    } else if (this.#head + size < tail) {
      at = this.#head
    }
    if (at < 0) return Buffer.allocUnsafe(size)
    this.#starts.push(at)
    this.#head = at + size
    return ring.subarray(at, at + size)
  }

  /** Whether `record` (one `take` gave) is in the ring: its room is released once it is written. */
  holds(record: Buffer): boolean {
    return record.buffer === this.#ring?.buffer
  }

  /** The oldest record held was written: its room is free. */
  release(): void {
    this.#starts.shift()
  }

  /** Records held (tests). */
  get held(): number {
    return this.#starts.length
  }
}

/** A ring holds two of the largest records and what a link queues besides (protocol.ts LINK_QUEUE_BYTES). */
const SEAL_RING_BYTES = 2 * (MAX_RECORD + RECORD_HEADER + TAG_BYTES) + 512 * 1024

/**
 * Seals `pieces` (their lengths add up to `length`, 1 to MAX_RECORD) into one record in `ring`,
 * to write as it is (if `ring.holds` it, its room is released once it is written).
 */
export function sealRecord(keys: RecordKeys, pieces: readonly Buffer[], length: number, ring: SealRing): Buffer {
  const [aead, nonce] = keys.next(length)
  const record = ring.take(RECORD_HEADER + length + TAG_BYTES)
  aead.seal(nonce, pieces, record, 0)
  return record
}

/** What a RecordReader hands on. */
export interface RecordSink {
  /**
   * A record's plaintext, once its tag verified: a view of a buffer the next record reuses,
   * unless `RecordReader.keep` was called during this call (a receiver kept a piece of it).
   */
  onRecord(plain: Buffer): void
  /** A record's length is out of range or its tag fails; nothing more is read. */
  onRecordError(detail: string): void
}

/** The smallest buffer records are opened into: most records of a busy link fit. */
const MIN_PLAIN_BYTES = 64 * 1024

/**
 * Opens the records of a byte stream, deciphering each read's ciphertext as it comes (a read's
 * buffer is reused for the next) into one buffer, reused record after record while nothing keeps
 * a view of it; nothing is handed on before the tag verifies.
 */
export class RecordReader {
  readonly #keys: RecordKeys
  readonly #sink: RecordSink
  /** Header or tag bytes gathered across reads (each is split at most a few ways). */
  readonly #small = Buffer.allocUnsafe(TAG_BYTES)
  #smallHave = 0
  /** -1: reading a header; else the ciphertext bytes of the current record still to come. */
  #left = -1
  #length = 0
  #aead: NativeAead | undefined
  /** Where records are opened; `#kept`: a receiver holds a view of it, so the next gets another. */
  #plain: Buffer | undefined
  #kept = false
  #have = 0
  #broken = false

  constructor(keys: RecordKeys, sink: RecordSink) {
    this.#keys = keys
    this.#sink = sink
  }

  /**
   * The record being handed on is kept (a piece of it waits in a socket's queue): the next
   * record is opened into a new buffer, and this one is left to whoever holds it.
   */
  keep(): void {
    this.#kept = true
  }

  push(chunk: Buffer): void {
    let at = 0
    while (at < chunk.length && !this.#broken) {
      if (this.#left < 0) {
        at = this.#gather(chunk, at, RECORD_HEADER)
        if (this.#smallHave < RECORD_HEADER) return
        this.#smallHave = 0
        const length = this.#small.readUInt32BE(0)
        if (length === 0 || length > MAX_RECORD) {
          this.#fail(`a record of ${length} bytes`)
          return
        }
        const [aead, nonce] = this.#keys.next(length)
        try {
          aead.begin(nonce, this.#small.subarray(0, RECORD_HEADER))
        } catch (err) {
          this.#cannotOpen(err)
          return
        }
        this.#aead = aead
        this.#length = length
        this.#left = length
        this.#have = 0
        if (this.#plain === undefined || this.#kept || this.#plain.length < length) {
          this.#plain = Buffer.allocUnsafeSlow(Math.max(length, MIN_PLAIN_BYTES))
          this.#kept = false
        }
        continue
      }
      if (this.#left > 0) {
        const take = Math.min(this.#left, chunk.length - at)
        try {
          this.#aead!.update(chunk.subarray(at, at + take), this.#plain!, this.#have)
        } catch (err) {
          this.#cannotOpen(err)
          return
        }
        this.#have += take
        this.#left -= take
        at += take
        continue
      }
      at = this.#gather(chunk, at, TAG_BYTES)
      if (this.#smallHave < TAG_BYTES) return
      this.#smallHave = 0
      this.#left = -1
      let verified: boolean
      try {
        verified = this.#aead!.final(this.#small)
      } catch (err) {
        this.#cannotOpen(err)
        return
      }
      if (!verified) {
        this.#fail('a record\'s tag does not verify')
        return
      }
      this.#sink.onRecord(this.#plain!.subarray(0, this.#length))
    }
  }

  /** The helper threw (not expected: the arguments are checked here): a link error all the same, never a crash. */
  #cannotOpen(err: unknown): void {
    this.#fail(`a record cannot be opened: ${(err as Error).message}`)
  }

  /** Copies up to `want` bytes of header or tag from `chunk` at `at`; returns where it stopped. */
  #gather(chunk: Buffer, at: number, want: number): number {
    const take = Math.min(want - this.#smallHave, chunk.length - at)
    chunk.copy(this.#small, this.#smallHave, at, at + take)
    this.#smallHave += take
    return at + take
  }

  #fail(detail: string): void {
    this.#broken = true
    this.#sink.onRecordError(detail)
  }
}
