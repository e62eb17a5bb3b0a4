// A byte-exact bulk stream through the echo server, run in the client namespace:
//   node --import tsx bench/lab/bulk-client.ts HOST PORT SECONDS BYTES_PER_SECOND
// It writes a known pattern at the given rate for SECONDS, then half-closes, and checks every
// byte that comes back against the pattern. It prints {"ev":"progress","received":n,"t":ms}
// whenever more came back (at most every 50 ms), and once the echo has ended
// {"ev":"done","sent":n,"received":n,"exact":bool,"how":"fin"|"rst"|"error:CODE","t":ms}.

import net from 'node:net'

const [host = '127.0.0.1', port = '7000', seconds = '5', rate = '1000000'] = process.argv.slice(2)
const CHUNK = 16384
const TICK_MS = 10

function emit(event: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ ...event, t: Date.now() }) + '\n')
}

/** Byte `i` of the stream: a pattern where a lost, repeated or moved byte shows. */
function patternByte(i: number): number {
  return (i * 31 + (i >>> 8) * 7 + (i >>> 16)) & 0xff
}

function patternChunk(offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) b[i] = patternByte(offset + i)
  return b
}

let sent = 0
let received = 0
let exact = true
let reported = 0
let finished = false
const socket = net.connect({ host, port: Number(port) })

function done(how: string): void {
  if (finished) return
  finished = true
  clearInterval(writer)
  clearInterval(progress)
  emit({ ev: 'done', sent, received, exact: exact && received === sent, how })
  socket.destroy()
}

socket.on('data', (chunk: Buffer) => {
  for (let i = 0; i < chunk.length && exact; i++) if (chunk[i] !== patternByte(received + i)) exact = false
  received += chunk.length
})
socket.on('end', () => done('fin'))
socket.on('error', (err: NodeJS.ErrnoException) => done(err.code === 'ECONNRESET' ? 'rst' : `error:${err.code ?? 'unknown'}`))

const perTick = Math.max(1, Math.round(Number(rate) * TICK_MS / 1000))
const end = Date.now() + Number(seconds) * 1000
let paused = false
socket.on('drain', () => { paused = false })
const writer = setInterval(() => {
  if (Date.now() >= end) {
    clearInterval(writer)
    socket.end()
    return
  }
  for (let budget = perTick; budget > 0 && !paused;) {
    const n = Math.min(CHUNK, budget)
    paused = !socket.write(patternChunk(sent, n))
    sent += n
    budget -= n
  }
}, TICK_MS)
const progress = setInterval(() => {
  if (received === reported) return
  reported = received
  emit({ ev: 'progress', received })
}, 50)
