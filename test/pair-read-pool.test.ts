// The read pool (src/pair/read-pool.ts): a paired session's plain leg reads into one shared
// buffer, each read copied into a slab; a slab's room is lent again only once every piece of it
// was released (acknowledged by the peer), never while one is still held.

import t from 'tap'
import { randomBytes } from 'node:crypto'
import { ReadPool } from '../src/pair/read-pool.ts'

/** A pool whose reads are made by hand: `read(bytes)` is what Node does when a socket reads them. */
function pool() {
  const p = new ReadPool()
  const taken: Buffer[] = []
  const { buffer, callback } = p.onread((piece) => {
    taken.push(piece)
    return true
  })
  const read = (bytes: Buffer): Buffer => {
    bytes.copy(buffer)
    t.equal(callback(bytes.length), true, 'the taker goes on reading')
    return taken.at(-1)!
  }
  return { p, buffer, read }
}

t.test('each read is copied out: the read buffer is the next read\'s, the piece stays', async (t) => {
  const { buffer, read } = pool()
  const a = randomBytes(1000)
  const piece = read(a)
  buffer.fill(0)
  t.ok(piece.equals(a), 'the piece keeps its bytes after the read buffer is written over')
  t.not(piece.buffer, buffer.buffer, 'it is not a view of the read buffer')
})

t.test('a slab is lent again only once every piece of it is released', async (t) => {
  const { p, read } = pool()
  const first = randomBytes(100)
  const second = randomBytes(200)
  const a = read(first)
  const b = read(second)
  t.equal(b.buffer, a.buffer, 'reads share a slab')
  t.equal(b.byteOffset, a.byteOffset + 100, 'one after the other')
  p.release(a)
  const c = read(randomBytes(300))
  t.equal(c.byteOffset, b.byteOffset + 200, 'one piece still held: the next goes after it, not over the released one')
  t.ok(b.equals(second), 'the piece held is intact')
  p.release(b)
  p.release(c)
  const d = read(randomBytes(50))
  t.equal(d.buffer, a.buffer, 'every piece released: the same slab')
  t.equal(d.byteOffset, 0, 'from its start')
})

t.test('full slabs: the next read goes to another; emptied ones are kept as spares, a few at most', async (t) => {
  const { p, read } = pool()
  const size = 64 * 1024
  const pieces: Buffer[] = []
  // 6 slabs' worth (16 reads of 64 KiB each), none released.
  for (let i = 0; i < 16 * 6; i++) pieces.push(read(randomBytes(size)))
  const slabs = new Set(pieces.map((piece) => piece.buffer))
  t.equal(slabs.size, 6, 'a new slab each time one is full')
  const copies = pieces.map((piece) => Buffer.from(piece))
  // Release all but the last slab's pieces: 5 slabs empty, 4 kept.
  for (const piece of pieces.slice(0, 16 * 5)) p.release(piece)
  t.equal(p.spare, 4, 'at most 4 spare slabs')
  const next: Buffer[] = []
  for (let i = 0; i < 16 * 2; i++) next.push(read(randomBytes(size)))
  t.ok(next.every((piece) => slabs.has(piece.buffer)), 'the next reads use the spares, no new slab')
  t.ok(pieces.slice(16 * 5).every((piece, i) => piece.equals(copies[16 * 5 + i]!)), 'the pieces still held are intact')
})

t.test('a buffer that is not the pool\'s is ignored', async (t) => {
  const { p, read } = pool()
  const a = read(Buffer.from('held'))
  p.release(Buffer.from('not from the pool'))
  const b = read(Buffer.from('next'))
  t.equal(b.byteOffset, a.byteOffset + 4, 'the pool\'s pieces are as they were')
  t.equal(String(a), 'held')
})
