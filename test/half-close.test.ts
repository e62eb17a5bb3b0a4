// --half-close-timeout bounds inactivity in the half-closed state (HAProxy's timeout
// client-fin): a response that keeps streaming after the client's FIN is not cut; one
// that stops is, about one bound after its last byte.

import t from 'tap'
import type { Socket } from 'node:net'
import { connect, endOf, listen, readAll } from './helpers/net.ts'
import { startProxy } from './helpers/proxy.ts'
import { SETUPS } from './helpers/transports.ts'

const CHUNK = 'x'.repeat(1000)

for (const { name, native, relay } of SETUPS) {
  t.test(`${name}: a response streaming for 4 bounds after the FIN arrives whole`, async (t) => {
    // After the client's FIN, the server answers a chunk every 100 ms for 2 s, then ends.
    const { server, port } = await listen((s) => answerAfterFin(s, 20, () => s.end()))
    t.teardown(() => server.close())
    const proxy = await startProxy({ target: `127.0.0.1:${port}`, halfCloseTimeout: 0.5, native, relay })
    t.teardown(() => proxy.stop())
    const client = await connect(proxy.port)
    const got = readAll(client)
    client.end('request')
    t.equal((await got).length, 20 * CHUNK.length, 'every byte, then a FIN')
    const [summary] = await proxy.closed()
    t.match(summary, { reason: 'client_end', clientClose: 'fin', targetClose: 'fin', bytesToClient: 20 * CHUNK.length })
  })

  t.test(`${name}: a half-closed session that goes quiet is cut one bound after its last byte`, async (t) => {
    let lastByteAt = 0
    // After the client's FIN, five chunks 100 ms apart, then silence (no FIN).
    const { server, port } = await listen((s) => {
      s.on('error', () => {})
      answerAfterFin(s, 5, () => {}, () => (lastByteAt = performance.now()))
    })
    t.teardown(() => server.close())
    const proxy = await startProxy({ target: `127.0.0.1:${port}`, halfCloseTimeout: 0.4, native, relay })
    t.teardown(() => proxy.stop())
    const client = await connect(proxy.port)
    const ended = endOf(client)
    client.end('request')
    t.equal(await ended, 'ECONNRESET', 'an RST, as before')
    const quiet = performance.now() - lastByteAt
    t.ok(quiet >= 390 && quiet < 900, `cut ${quiet.toFixed(0)} ms after the last byte (bound 400 ms)`)
    const [summary] = await proxy.closed()
    t.match(summary, { reason: 'half_close_timeout', bytesToClient: 5 * CHUNK.length })
  })
}

/** Once `s` reads the client's FIN, writes `chunks` chunks 100 ms apart (`onChunk` after each), then calls `done`. */
function answerAfterFin(s: Socket, chunks: number, done: () => void, onChunk: () => void = () => {}): void {
  s.resume()
  s.once('end', () => {
    let n = 0
    const timer = setInterval(() => {
      s.write(CHUNK)
      onChunk()
      if (++n === chunks) {
        clearInterval(timer)
        done()
      }
    }, 100)
    s.once('close', () => clearInterval(timer))
  })
}
