// Sessions on the stream transport (KA_PROXY_RELAY=stream, native helper loaded) do not move in an
// upgrade: Node streams hold bytes in their own buffers (read ahead, writes queued for a slow
// reader) that no descriptor carries. They stay in the old process, which says so in one line and
// exits only once they have ended: streams both ways and a slow reader's queued bytes arrive whole.

import t from 'tap'
import { collect, connect, readAll, sleep, waitFor } from './helpers/net.ts'
import { payload, writeChunked } from './helpers/payload.ts'
import { oneSession, twoWayStreams, upgradeTestSetup } from './helpers/upgrade.ts'

const { dir } = upgradeTestSetup(t, 'upgrade-stream')

t.test('stream transport: its sessions stay in the old process, one line says how many and why, no byte lost', async (t) => {
  const { port, proxy, client, server, target } = await oneSession(t, dir, 'stream', [], { KA_PROXY_RELAY: 'stream' })
  const oldPid = proxy.proc.pid!
  t.equal((await proxy.line((l) => l.msg === 'listening')).relay, 'stream')
  const streams = twoWayStreams(client, server)
  // A slow reader: the old process holds bytes for it in Node's buffers.
  const slowClient = await connect(port)
  const slowServer = await target.next()
  slowClient.pause()
  const slowData = payload(4 << 20)
  const slowWrote = writeChunked(slowServer, slowData, { end: true })
  await sleep(300)
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => l.msg.startsWith('upgrade done'), 30_000)
  t.equal(done.sessions, 0, 'none moved')
  t.equal(done.sessionsLeft, 2, 'both stay')
  const stay = await proxy.line((l) => l.pid === oldPid && /stream transport stay/.test(l.msg), 5000)
  t.equal(stay.sessions, 2)
  t.match(stay.msg, /^upgrade: 2 sessions on the stream transport stay in this process until they end: Node streams cannot hand a session over/)
  // The new process serves new sessions meanwhile.
  const fresh = await connect(port)
  const freshServer = await target.next()
  const echoed = collect(freshServer)
  fresh.write('new')
  t.ok(await waitFor(() => echoed.data().toString() === 'new', 5000), 'a new session goes through the new process')
  fresh.end()
  freshServer.end()
  const slowAtClient = readAll(slowClient)
  slowClient.resume()
  await slowWrote
  t.ok((await slowAtClient).equals(slowData), 'the slow reader got every byte the old process held, in order')
  const whole = await streams.whole()
  t.ok(whole.arrived && whole.up && whole.down, 'streams both ways: whole, in order, once')
  slowClient.end()
  await sleep(300)
  t.equal(proxy.proc.exitCode, null, 'the old process waits for its last session')
  client.end()
  server.end()
  t.equal(await proxy.exited, 0, 'and exits once it ended')
  t.equal(proxy.logs.filter((l) => /stream transport stay/.test(l.msg)).length, 1, 'one line')
  const lines = proxy.logs.filter((l) => l.pid === oldPid && l.msg === 'session closed')
  t.same(lines.map((l) => [l.bytesToTarget, l.bytesToClient]).sort(), [[0, 4 << 20], [8 << 20, 8 << 20]].sort(), 'their lines, whole, from the old process')
  process.kill(Number(done.newPid), 'SIGTERM')
})
