// The pair link's sealed records (src/pair/records.ts over native/ka_aead.c), without sockets:
// what one end seals the other opens, however the reads split the stream; a record altered,
// replayed, dropped or reordered fails and nothing after it is handed on; both ends move to the
// next key at the same record; and a record is plain AES-256-GCM as records.ts documents it
// (node:crypto, an implementation of its own, opens what the helper sealed and the reverse).

import t from 'tap'
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { loadNative } from '../src/native.ts'
import { MAX_RECORD, RECORD_HEADER, RecordKeys, RecordReader, SealRing, sealRecord, TAG_BYTES } from '../src/pair/records.ts'

const load = loadNative()
if (!load.ok) throw new Error(`native helper must be built for these tests: ${load.reason}`)
const native = load.binding

const KEY = randomBytes(32)
const IV = randomBytes(12)

function opener(keys = new RecordKeys(KEY, IV, false)) {
  const got: Buffer[] = []
  const errors: string[] = []
  const reader = new RecordReader(keys, { onRecord: (plain) => got.push(Buffer.from(plain)), onRecordError: (detail) => errors.push(detail) })
  return { reader, got, errors }
}

/** Records of these plaintexts, sealed in order by one sender (each copied out of the ring, whose room is then released). */
function sealAll(plains: Buffer[], keys = new RecordKeys(KEY, IV, true)): Buffer[] {
  const ring = new SealRing()
  return plains.map((p) => {
    const record = sealRecord(keys, [p.subarray(0, p.length >> 1), p.subarray(p.length >> 1)], p.length, ring)
    const copy = Buffer.from(record)
    if (ring.holds(record)) ring.release()
    return copy
  })
}

/** Pushes `stream` to `reader` in reads of `size`, each through one buffer reused read after read (as a link reads). */
function pushThroughOneBuffer(reader: RecordReader, stream: Buffer, size: number): void {
  const scratch = Buffer.alloc(size)
  for (let at = 0; at < stream.length; at += size) {
    const n = stream.copy(scratch, 0, at, at + size)
    reader.push(scratch.subarray(0, n))
    scratch.fill(0xee)
  }
}

/** The nonce of record `seq` (below 2^32): the IV with the number XORed into its last bytes. */
function nonceOf(seq: number): Buffer {
  const nonce = Buffer.from(IV)
  nonce.writeUInt32BE((nonce.readUInt32BE(8) ^ seq) >>> 0, 8)
  return nonce
}

t.test('what is sealed opens, whatever the split of the stream', async (t) => {
  const plains = [randomBytes(1), randomBytes(1000), randomBytes(70_000), randomBytes(MAX_RECORD)]
  const stream = Buffer.concat(sealAll(plains))
  t.equal(stream.length, plains.reduce((n, p) => n + RECORD_HEADER + p.length + TAG_BYTES, 0), 'each record: its header, its bytes and a tag')
  for (const size of [1, 3, 5, 17, 4096, 65536, stream.length]) {
    const { reader, got, errors } = opener()
    pushThroughOneBuffer(reader, stream, size)
    t.same(errors, [], `reads of ${size}, one buffer reused for all: no error`)
    t.ok(got.length === plains.length && got.every((g, i) => g.equals(plains[i]!)), `reads of ${size}: every record, byte-exact, in order`)
  }
})

t.test('records open into one buffer, reused unless the receiver keeps a piece', async (t) => {
  const plains = [randomBytes(1000), randomBytes(2000), randomBytes(3000), randomBytes(100_000)]
  const stream = Buffer.concat(sealAll(plains))
  const views: Buffer[] = []
  const copies: Buffer[] = []
  let reader: RecordReader
  reader = new RecordReader(new RecordKeys(KEY, IV, false), {
    onRecord: (plain) => {
      views.push(plain)
      copies.push(Buffer.from(plain))
      // The second record's receiver keeps it.
      if (views.length === 2) reader.keep()
    },
    onRecordError: (detail) => t.fail(detail),
  })
  pushThroughOneBuffer(reader, stream, 4096)
  t.ok(copies.every((c, i) => c.equals(plains[i]!)), 'each record arrives byte-exact')
  const [v0, v1, v2, v3] = views as [Buffer, Buffer, Buffer, Buffer]
  t.equal(v1.buffer, v0.buffer, 'a record nobody kept: the next opens into the same buffer')
  t.not(v2.buffer, v1.buffer, 'a record kept: the next opens into another')
  t.ok(v1.equals(plains[1]!), 'and the kept one still holds its bytes after the records after it')
  t.not(v3.buffer, v2.buffer, 'a record larger than the buffer gets a larger one')
})

t.test('a sealing ring holds each record until its write is done, and lends its room again after', async (t) => {
  const keys = new RecordKeys(KEY, IV, true)
  const ring = new SealRing()
  const held: Array<[Buffer, Buffer]> = []
  const plain = randomBytes(MAX_RECORD)
  let own = 0
  // More than the ring holds, none released: each record keeps its bytes (a later one goes elsewhere).
  for (let i = 0; i < 6; i++) {
    const record = sealRecord(keys, [plain.subarray(0, MAX_RECORD - i)], MAX_RECORD - i, ring)
    if (ring.holds(record)) held.push([record, Buffer.from(record)])
    else own++
  }
  t.ok(own > 0 && held.length > 0, `a full ring: ${held.length} records in it, ${own} in buffers of their own`)
  t.ok(held.every(([record, copy]) => record.equals(copy)), 'no record held in the ring was written over')
  t.equal(ring.held, held.length, 'the ring counts what it holds')
  for (let i = 0; i < held.length; i++) ring.release()
  const after = sealRecord(keys, [Buffer.from('x')], 1, ring)
  t.ok(ring.holds(after) && after.buffer === held[0]![0].buffer && after.byteOffset === 0, 'once released, the ring lends its room from the start again')
  // Wrapping round to the oldest record held: a record that would reach it goes elsewhere, and
  // the ring never takes a full ring for an empty one.
  ring.release()
  const big = (n: number): [Buffer, Buffer, boolean] => {
    const record = sealRecord(keys, [plain.subarray(0, n)], n, ring)
    return [record, Buffer.from(record), ring.holds(record)]
  }
  const first = big(MAX_RECORD)
  const second = big(MAX_RECORD)
  ring.release()
  const third = big(MAX_RECORD)
  const fourth = big(100)
  t.ok(first[2] && second[2] && fourth[2], 'the ring takes the first two and a small one')
  t.ok(second[0].equals(second[1]) && third[0].equals(third[1]) && fourth[0].equals(fourth[1]), 'a record as large as the room before the oldest held, and one after it: nothing written over')
  while (ring.held > 0) ring.release()
  // Small records, released in order: the ring wraps and never overlaps one still held.
  const window: Array<[Buffer, Buffer]> = []
  for (let i = 0; i < 2000; i++) {
    const p = randomBytes(1 + ((i * 7919) % 200_000))
    const record = sealRecord(keys, [p], p.length, ring)
    if (!ring.holds(record)) t.fail(`record ${i} does not fit in the ring`)
    window.push([record, Buffer.from(record)])
    if (window.length > 8) {
      const [oldest, copy] = window.shift()!
      if (!oldest.equals(copy)) t.fail(`record ${i - 8} was written over while held`)
      ring.release()
    }
  }
  t.ok(window.every(([record, copy]) => record.equals(copy)), 'the records still held are intact')
})

t.test('a record altered, replayed, dropped or reordered fails, and nothing after it is handed on', async (t) => {
  const plains = [randomBytes(100), randomBytes(200), randomBytes(300)]
  const [r0, r1, r2] = sealAll(plains) as [Buffer, Buffer, Buffer]
  for (const [name, at] of [['its length', 3], ['its ciphertext', RECORD_HEADER + 50], ['its tag', RECORD_HEADER + 200 + 5]] as const) {
    const bad = Buffer.from(r1)
    bad[at]! ^= 1
    const { reader, got, errors } = opener()
    reader.push(Buffer.concat([r0, bad, r2]))
    t.equal(got.length, 1, `one bit of ${name} flipped: the record before it opens`)
    t.equal(errors.length, 1, `one bit of ${name} flipped: one error, nothing after it`)
  }
  for (const [name, stream] of [
    ['replayed', [r0, r0, r1]],
    ['dropped', [r0, r2]],
    ['reordered', [r1, r0]],
  ] as const) {
    const { reader, got, errors } = opener()
    reader.push(Buffer.concat(stream))
    t.same(errors, ["a record's tag does not verify"], `${name}: refused`)
    t.equal(got.length, name === 'reordered' ? 0 : 1, `${name}: only what came in order opens`)
  }
  for (const length of [0, MAX_RECORD + 1]) {
    const header = Buffer.alloc(RECORD_HEADER)
    header.writeUInt32BE(length)
    const { reader, errors } = opener()
    reader.push(Buffer.concat([header, Buffer.alloc(64)]))
    t.same(errors, [`a record of ${length} bytes`], `a length of ${length}: refused before any of it is read`)
  }
})

t.test('both ends move to the next key at the same record, and it is another key', async (t) => {
  const plains = Array.from({ length: 10 }, () => randomBytes(600))
  const stream = Buffer.concat(sealAll(plains, new RecordKeys(KEY, IV, true, 1000)))
  const same = opener(new RecordKeys(KEY, IV, false, 1000))
  same.reader.push(stream)
  t.same(same.errors, [], 'updating every 1000 bytes at both ends: no error')
  t.equal(same.got.length, 10, 'all 10 records (5 keys) open')
  const stale = opener(new RecordKeys(KEY, IV, false))
  stale.reader.push(stream)
  t.equal(stale.got.length, 2, 'an end that kept the first key opens the 2 records sealed under it')
  t.equal(stale.errors.length, 1, 'and fails the third')
})

t.test('a record of many pieces (more than the helper holds inline, up to its 4096) is the record of their bytes together', async (t) => {
  for (const count of [1, 32, 33, 100, 4096]) {
    const pieces = Array.from({ length: count }, (_, i) => randomBytes(i % 7))
    pieces[0] = randomBytes(3)
    const whole = Buffer.concat(pieces)
    const [one] = sealAll([whole])
    const ring = new SealRing()
    const record = sealRecord(new RecordKeys(KEY, IV, true), pieces, whole.length, ring)
    t.ok(record.equals(one!), `${count} pieces (some empty): the same record as their bytes in one piece`)
  }
})

t.test('a record is AES-256-GCM: the length as additional data, the nonce the IV XOR the record number', async (t) => {
  const plains = [randomBytes(5000), randomBytes(17)]
  const records = sealAll(plains)
  records.forEach((record, seq) => {
    const length = record.readUInt32BE(0)
    const decipher = createDecipheriv('aes-256-gcm', KEY, nonceOf(seq), { authTagLength: TAG_BYTES })
    decipher.setAAD(record.subarray(0, RECORD_HEADER))
    decipher.setAuthTag(record.subarray(RECORD_HEADER + length))
    const plain = Buffer.concat([decipher.update(record.subarray(RECORD_HEADER, RECORD_HEADER + length)), decipher.final()])
    t.ok(plain.equals(plains[seq]!), `record ${seq}, sealed by the helper, opens with node:crypto`)
  })
  const { reader, got, errors } = opener()
  plains.forEach((plain, seq) => {
    const header = Buffer.alloc(RECORD_HEADER)
    header.writeUInt32BE(plain.length)
    const cipher = createCipheriv('aes-256-gcm', KEY, nonceOf(seq), { authTagLength: TAG_BYTES })
    cipher.setAAD(header)
    reader.push(Buffer.concat([header, cipher.update(plain), cipher.final(), cipher.getAuthTag()]))
  })
  t.same(errors, [])
  t.ok(got.length === 2 && got.every((g, i) => g.equals(plains[i]!)), 'records sealed by node:crypto open with the helper')
})

t.test('the helper refuses bad arguments with a TypeError, and never crashes', async (t) => {
  const { Aead } = native
  const sealer = new Aead(KEY, true)
  const openerAead = new Aead(KEY, false)
  const nonce = Buffer.alloc(12)
  const out = Buffer.alloc(64)
  const header10 = Buffer.from([0, 0, 0, 10])
  for (const [name, call] of [
    ['a short key', () => new Aead(Buffer.alloc(16), true)],
    ['a key that is not a Buffer', () => new Aead('k'.repeat(32) as unknown as Buffer, true)],
    ['without new', () => (Aead as unknown as (k: Buffer, s: boolean) => unknown)(KEY, true)],
    ['a short nonce', () => sealer.seal(Buffer.alloc(8), [Buffer.alloc(1)], out, 0)],
    ['no bytes', () => sealer.seal(nonce, [], out, 0)],
    ['an empty piece only', () => sealer.seal(nonce, [Buffer.alloc(0)], out, 0)],
    ['a piece that is not a Buffer', () => sealer.seal(nonce, ['x' as unknown as Buffer], out, 0)],
    ['pieces not in an array', () => sealer.seal(nonce, Buffer.alloc(4) as unknown as Buffer[], out, 0)],
    ['more than 16 MiB', () => sealer.seal(nonce, Array.from({ length: 17 }, () => Buffer.alloc(1 << 20)), out, 0)],
    ['no out buffer', () => sealer.seal(nonce, [Buffer.alloc(1)], 'x' as unknown as Buffer, 0)],
    ['no room in out', () => sealer.seal(nonce, [Buffer.alloc(45)], out, 0)],
    ['no room after the offset', () => sealer.seal(nonce, [Buffer.alloc(1)], out, 44)],
    ['an offset past the end', () => sealer.seal(nonce, [Buffer.alloc(1)], out, 65)],
    ['a negative offset', () => sealer.seal(nonce, [Buffer.alloc(1)], out, -1)],
    ['an offset that is not an integer', () => sealer.seal(nonce, [Buffer.alloc(1)], out, 1.5)],
    ['an offset that is not a number', () => sealer.seal(nonce, [Buffer.alloc(1)], out, '0' as unknown as number)],
    ['sealing with an opener', () => openerAead.seal(nonce, [Buffer.alloc(1)], out, 0)],
    ['opening with a sealer', () => sealer.begin(nonce, header10)],
    ['a long header', () => openerAead.begin(nonce, Buffer.alloc(5))],
    ['a header of length 0', () => openerAead.begin(nonce, Buffer.alloc(4))],
    ['more than 4096 pieces', () => sealer.seal(nonce, Array.from({ length: 4097 }, () => Buffer.alloc(1)), Buffer.alloc(8192), 0)],
    ['a bad piece after the 32 held inline', () => sealer.seal(nonce, [...Array.from({ length: 40 }, () => Buffer.alloc(1)), 'x' as unknown as Buffer], Buffer.alloc(100), 0)],
    ['a header over 16 MiB', () => openerAead.begin(nonce, Buffer.from([1, 0, 0, 1]))],
    ['update before begin', () => openerAead.update(Buffer.alloc(1), out, 0)],
    ['final before begin', () => openerAead.final(Buffer.alloc(16))],
  ] as const) {
    t.throws(call, { name: 'TypeError', code: 'KA_NATIVE_ARG' }, name)
  }
  openerAead.begin(nonce, header10)
  for (const [name, call] of [
    ['more ciphertext than the record', () => openerAead.update(Buffer.alloc(11), out, 0)],
    ['no room in out for the piece', () => openerAead.update(Buffer.alloc(5), out, 60)],
    ['final before the whole ciphertext', () => openerAead.final(Buffer.alloc(16))],
  ] as const) {
    t.throws(call, { name: 'TypeError', code: 'KA_NATIVE_ARG' }, name)
  }
  openerAead.update(Buffer.alloc(10), out, 0)
  t.throws(() => openerAead.final(Buffer.alloc(8)), { code: 'KA_NATIVE_ARG' }, 'a short tag')
  t.equal(openerAead.final(Buffer.alloc(16)), false, 'a tag that does not verify: false')
  t.throws(() => openerAead.final(Buffer.alloc(16)), { code: 'KA_NATIVE_ARG' }, 'final twice')
  const size = sealer.seal(nonce, [Buffer.from('still '), Buffer.from('works')], out, 3)
  t.equal(size, 4 + 11 + 16, 'seal says the size of the record it wrote')
  const record = out.subarray(3, 3 + size)
  const plain = Buffer.alloc(11)
  openerAead.begin(nonce, record.subarray(0, 4))
  openerAead.update(record.subarray(4, 9), plain, 0)
  openerAead.update(record.subarray(9, 15), plain, 5)
  t.equal(openerAead.final(record.subarray(15)), true, 'a record opened in two pieces verifies')
  t.equal(String(plain), 'still works', 'both still work after every refusal')
})
