// The read pool (src/pair/read-pool.ts): a paired session's plain leg reads into one shared
// buffer, each read copied out at once: a large one into a slab of that socket's own, lent again
// only once every piece of it was released (acknowledged by the peer), never while one is held;
// a small one into a buffer of its own.

import t from 'tap'
import { randomBytes } from 'node:crypto'
import { ReadPool, SLAB_BYTES, SPARE_SLABS } from '../src/pair/read-pool.ts'

const LARGE = 20 * 1024

/** A socket's reads made by hand: `read(bytes)` is what Node does when the socket reads them. */
function socketOf(p: ReadPool) {
  let last: Buffer | undefined
  const take = p.onread((piece) => {
    last = piece
    return true
  })
  const read = (bytes: Buffer): Buffer => {
    bytes.copy(take.buffer)
    take.callback(bytes.length)
    return last!
  }
  return { read, readBuffer: take.buffer }
}

t.test('each read is copied out: the read buffer is the next read\'s, the piece stays', async (t) => {
  const s = socketOf(new ReadPool())
  for (const size of [100, LARGE]) {
    const bytes = randomBytes(size)
    const piece = s.read(bytes)
    s.readBuffer.fill(0)
    t.ok(piece.equals(bytes), `${size} B: the piece keeps its bytes after the read buffer is written over`)
    t.not(piece.buffer, s.readBuffer.buffer, `${size} B: not a view of the read buffer`)
  }
  const small = s.read(randomBytes(100))
  t.ok(small.buffer.byteLength <= Buffer.poolSize, `a small read: in Node's pool of ${Buffer.poolSize} B, not in a slab (its buffer: ${small.buffer.byteLength} B)`)
})

t.test('a slab is one socket\'s, and lent again only once every piece of it is released', async (t) => {
  const p = new ReadPool()
  const s = socketOf(p)
  const other = socketOf(p)
  const second = randomBytes(LARGE)
  const a = s.read(randomBytes(LARGE))
  const x = other.read(randomBytes(LARGE))
  const b = s.read(second)
  t.equal(b.buffer, a.buffer, 'one socket\'s reads share a slab')
  t.equal(b.byteOffset, a.byteOffset + LARGE, 'one after the other')
  t.not(x.buffer, a.buffer, 'another socket\'s read is in a slab of its own')
  p.release(a)
  const c = s.read(randomBytes(LARGE))
  t.equal(c.byteOffset, b.byteOffset + LARGE, 'one piece still held: the next goes after it, not over the released one')
  t.ok(b.equals(second), 'the piece held is intact')
  p.release(b)
  p.release(c)
  t.equal(p.spare, 1, 'every piece released: the slab is a spare, off its socket')
  const y = socketOf(p).read(randomBytes(LARGE))
  t.equal(y.buffer, a.buffer, 'a spare is lent to whichever socket reads next')
  t.not(x.buffer, y.buffer, 'and not the slab of a socket whose piece is still held')
  t.equal(y.byteOffset, 0, 'from its start')
})

t.test('full slabs: the next read goes to another; emptied ones are kept as spares, a few at most', async (t) => {
  const p = new ReadPool()
  const s = socketOf(p)
  const size = 64 * 1024
  const perSlab = SLAB_BYTES / size
  const slabCount = SPARE_SLABS + 8
  const pieces: Buffer[] = []
  // More slabs' worth than the spares, none released.
  for (let i = 0; i < perSlab * slabCount; i++) pieces.push(s.read(randomBytes(size)))
  const slabs = new Set(pieces.map((piece) => piece.buffer))
  t.equal(slabs.size, slabCount, 'a new slab each time one is full')
  const copies = pieces.map((piece) => Buffer.from(piece))
  // Release all but the last 2 slabs' pieces: more slabs empty than are kept.
  const kept = perSlab * (slabCount - 2)
  for (const piece of pieces.slice(0, kept)) p.release(piece)
  t.equal(p.spare, SPARE_SLABS, `at most ${SPARE_SLABS} spare slabs`)
  const next: Buffer[] = []
  for (let i = 0; i < perSlab * (SPARE_SLABS - 1); i++) next.push(s.read(randomBytes(size)))
  t.ok(next.every((piece) => slabs.has(piece.buffer)), 'the next reads use the spares, no new slab')
  t.ok(pieces.slice(kept).every((piece, i) => piece.equals(copies[kept + i]!)), 'the pieces still held are intact')
})

t.test('a buffer that is not a slab\'s is ignored', async (t) => {
  const p = new ReadPool()
  const s = socketOf(p)
  const held = randomBytes(LARGE)
  const a = s.read(held)
  p.release(Buffer.from('not from the pool'))
  p.release(s.read(Buffer.from('small')))
  const b = s.read(randomBytes(LARGE))
  t.equal(b.byteOffset, a.byteOffset + LARGE, 'the slab\'s pieces are as they were')
  t.ok(a.equals(held))
})
