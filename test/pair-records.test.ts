// The pair link's sealed records (src/pair/records.ts over native/ka_aead.c), without sockets:
// what one end seals the other opens, however the reads split the stream; a record altered,
// replayed, dropped or reordered fails and nothing after it is handed on; both ends move to the
// next key at the same record; and a record is plain AES-256-GCM as records.ts documents it
// (node:crypto, an implementation of its own, opens what the helper sealed and the reverse).

import t from 'tap'
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { loadNative } from '../src/native.ts'
import { MAX_RECORD, RECORD_HEADER, RecordKeys, RecordReader, sealRecord, TAG_BYTES } from '../src/pair/records.ts'

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

/** Records of these plaintexts, sealed in order by one sender. */
function sealAll(plains: Buffer[], keys = new RecordKeys(KEY, IV, true)): Buffer[] {
  return plains.map((p) => sealRecord(keys, [p.subarray(0, p.length >> 1), p.subarray(p.length >> 1)], p.length))
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
    for (let at = 0; at < stream.length; at += size) reader.push(stream.subarray(at, at + size))
    t.same(errors, [], `reads of ${size}: no error`)
    t.ok(got.length === plains.length && got.every((g, i) => g.equals(plains[i]!)), `reads of ${size}: every record, byte-exact, in order`)
  }
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
  for (const [name, call] of [
    ['a short key', () => new Aead(Buffer.alloc(16), true)],
    ['a key that is not a Buffer', () => new Aead('k'.repeat(32) as unknown as Buffer, true)],
    ['without new', () => (Aead as unknown as (k: Buffer, s: boolean) => unknown)(KEY, true)],
    ['a short nonce', () => sealer.seal(Buffer.alloc(8), [Buffer.alloc(1)])],
    ['no bytes', () => sealer.seal(nonce, [])],
    ['an empty piece only', () => sealer.seal(nonce, [Buffer.alloc(0)])],
    ['a piece that is not a Buffer', () => sealer.seal(nonce, ['x' as unknown as Buffer])],
    ['pieces not in an array', () => sealer.seal(nonce, Buffer.alloc(4) as unknown as Buffer[])],
    ['sealing with an opener', () => openerAead.seal(nonce, [Buffer.alloc(1)])],
    ['opening with a sealer', () => sealer.open(nonce, Buffer.alloc(4), [Buffer.alloc(1)], Buffer.alloc(16))],
    ['a short tag', () => openerAead.open(nonce, Buffer.alloc(4), [Buffer.alloc(1)], Buffer.alloc(8))],
    ['a long header', () => openerAead.open(nonce, Buffer.alloc(5), [Buffer.alloc(1)], Buffer.alloc(16))],
    ['more than 16 MiB', () => sealer.seal(nonce, Array.from({ length: 17 }, () => Buffer.alloc(1 << 20)))],
  ] as const) {
    t.throws(call, { name: 'TypeError', code: 'KA_NATIVE_ARG' }, name)
  }
  t.equal(openerAead.open(nonce, Buffer.alloc(4), [Buffer.alloc(10)], Buffer.alloc(16)), null, 'a tag that does not verify: null')
  const record = sealer.seal(nonce, [Buffer.from('still works')])
  t.equal(String(openerAead.open(nonce, record.subarray(0, 4), [record.subarray(4, 15)], record.subarray(15))), 'still works', 'both still work after every refusal')
})
