// The upgrade (SIGUSR2) of either end of a pair, with real processes: to the other end it is a
// lost link followed by a resume. Idle sessions and a byte stream running both ways through the
// pair carry on, byte-exact, the plain legs none the wiser (same sockets, keepalive read back);
// the old process exits; the far end logs each session's resume. A far end's upgrade takes its
// pair address along (it used to fail: the new process could not bind it).

import t from 'tap'
import type { Socket } from 'node:net'
import { request } from 'undici'
import { once } from 'node:events'
import { collect, connect, endOf, manualTarget, readAll, sleep, waitFor } from './helpers/net.ts'
import { payload, writeChunked } from './helpers/payload.ts'
import type { RunningProxy } from './helpers/cli.ts'
import { breakablePath, type BreakablePath } from './helpers/path.ts'
import { MAIN, NATIVE, roundTrip, startPairProcesses, upgradeProcess, upgradeTestSetup } from './helpers/upgrade.ts'

const { dir } = upgradeTestSetup(t, 'upgrade-pair')

const IDLE = 20

/**
 * Random bytes written both ways through a session, 16 KiB every 2 ms in each direction (about
 * 8 MB/s: the upgrade falls in the middle), until `stop`; `whole()` then says whether each end got
 * exactly what the other wrote, in order, once.
 */
function runningStreams(client: Socket, server: Socket): { stop(): void; whole(): Promise<{ arrived: boolean; up: boolean; down: boolean; bytes: number }> } {
  const sources = { up: payload(64 << 20), down: payload(64 << 20) }
  const got = { up: collect(server), down: collect(client) }
  const wrote = { up: 0, down: 0 }
  let stopped = false
  const write = async (socket: Socket, direction: 'up' | 'down'): Promise<void> => {
    const data = sources[direction]
    while (!stopped && wrote[direction] < data.length) {
      const ok = socket.write(data.subarray(wrote[direction], (wrote[direction] += 16384)))
      if (!ok) await once(socket, 'drain')
      await sleep(2)
    }
  }
  const writing = Promise.all([write(client, 'up'), write(server, 'down')])
  return {
    stop: () => (stopped = true),
    async whole() {
      await writing
      const arrived = await waitFor(() => got.up.length() >= wrote.up && got.down.length() >= wrote.down, 30_000)
      return {
        arrived,
        up: got.up.data().equals(sources.up.subarray(0, wrote.up)),
        down: got.down.data().equals(sources.down.subarray(0, wrote.down)),
        bytes: wrote.up + wrote.down,
      }
    },
  }
}

/**
 * Two sessions, each half-closed before the upgrade: one by its client (request and FIN through),
 * one by its server (greeting and FIN through). `finish()` sends, after the upgrade, the response
 * and the upload, each with its FIN, and says whether each arrived whole, then ended.
 */
async function halfClosed(port: number, target: { next(): Promise<Socket> }): Promise<{ finish(): Promise<{ response: boolean; upload: boolean }> }> {
  const asker = await connect(port)
  const askerServer = await target.next()
  const request = readAll(askerServer)
  asker.end('request')
  if ((await request).toString() !== 'request') throw new Error('the request did not arrive before the upgrade')
  const greeter = await connect(port)
  const greeterServer = await target.next()
  const greeting = readAll(greeter)
  greeterServer.end('greeting')
  if ((await greeting).toString() !== 'greeting') throw new Error('the greeting did not arrive before the upgrade')
  return {
    async finish() {
      const responseData = payload(1 << 20)
      const uploadData = payload(1 << 20)
      const [response, upload] = await Promise.all([readAll(asker), readAll(greeterServer), writeChunked(askerServer, responseData, { end: true }), writeChunked(greeter, uploadData, { end: true })])
      return { response: response.equals(responseData), upload: upload.equals(uploadData) }
    },
  }
}

/** Each session's plain legs' keepalive as /sessions reads it back. */
async function keepalives(admin: number): Promise<Array<[number, number, number] | null>> {
  const res = await request(`http://127.0.0.1:${admin}/sessions`)
  const listed = ((await res.body.json()) as { sessions: Array<{ legs: Record<string, { keepalive: { idle: number; interval: number; count: number } } | null> }> }).sessions
  return listed.flatMap((s) => Object.values(s.legs).filter((l) => l !== null).map((l) => (l.keepalive ? [l.keepalive.idle, l.keepalive.interval, l.keepalive.count] : null)))
}

const cases = [
  { upgraded: 'near', hole: false },
  { upgraded: 'far', hole: false },
  { upgraded: 'near', hole: true },
  { upgraded: 'far', hole: true },
] as const

for (const { upgraded, hole } of cases) {
  const what = hole ? ', its link blackholed just before (the bytes sent into the hole go along and are sent again)' : ''
  t.test(`the ${upgraded} end upgraded${what}: ${IDLE} idle sessions and streams both ways carry on byte-exact, the old process exits, the far end resumes them`, async (t) => {
    const target = await manualTarget(t)
    let path: BreakablePath | undefined
    const through = hole ? async (farPort: number) => (path = await breakablePath(farPort)).port : undefined
    const pair = await startPairProcesses(t, dir, target.port, `${upgraded}${hole ? '-hole' : ''}`, through)
    if (path !== undefined) t.teardown(() => path!.close())
    const idle: Socket[] = []
    for (let i = 0; i < IDLE; i++) {
      const client = await connect(pair.nearPort)
      t.teardown(() => client.destroy())
      const server = await target.next()
      server.pipe(server)
      t.equal(await roundTrip(client, `before ${i}`), `before ${i}`)
      idle.push(client)
    }
    const bulkClient = await connect(pair.nearPort)
    t.teardown(() => bulkClient.destroy())
    const bulkServer = await target.next()
    const streams = runningStreams(bulkClient, bulkServer)
    // A reader that does not read, on the far side of the pair from the end upgraded: the end
    // upgraded holds a window's worth sent and not acknowledged, which must travel with it.
    const slowClient = await connect(pair.nearPort)
    t.teardown(() => slowClient.destroy())
    const slowServer = await target.next()
    const [reader, writer] = upgraded === 'near' ? [slowServer, slowClient] : [slowClient, slowServer]
    const slowAtReader = collect(reader)
    reader.pause()
    // More than the kernel takes for a reader that does not read (the writer's send buffer grows
    // to 4 MiB here): past that the far side stops acknowledging, whatever the timing. With 4 MiB
    // the kernel sometimes took it all, every byte was acknowledged and nothing was held.
    const slowData = payload(16 << 20)
    const slowWrote = writeChunked(writer, slowData, { end: false })
    // Half-closed both ways round: the client's request and FIN are through, its response comes
    // after the upgrade; the server's greeting and FIN are through, the client's upload comes after.
    const half = await halfClosed(pair.nearPort, target)
    await sleep(500)

    const end = pair[upgraded]
    const oldPid = end.proc.pid!
    const farPid = pair.far.proc.pid!
    // The old link passes nothing from here on, and nobody is told: what is sent into it is lost.
    path?.blackhole()
    const done = await upgradeProcess(end, oldPid)
    const newPid = Number(done.newPid)
    t.equal(done.sessions, IDLE + 4, 'every session moved, the half-closed ones too')
    t.ok(Number(done.heldBytes) >= 65_536, `the bytes sent and not acknowledged went along: ${String(done.heldBytes)}`)
    t.equal(done.sessionsLeft, 0, 'none left in the old process')
    t.equal(await end.exited, 0, 'the old process exited')

    // The streams run on a while through the new process (and, at the far end, the new link).
    await sleep(500)
    streams.stop()
    const { arrived, up, down, bytes } = await streams.whole()
    t.ok(arrived, `the streams arrived (${bytes} bytes in all; the old process held ${String(done.heldBytes)} unacknowledged at hand-over)`)
    t.ok(up, 'client to target: no byte lost, reordered or repeated')
    t.ok(down, 'target to client: no byte lost, reordered or repeated')
    reader.resume()
    await slowWrote
    t.ok(await waitFor(() => slowAtReader.length() >= slowData.length, 30_000), 'the reader that did not read gets every byte once it reads')
    t.ok(slowAtReader.data().equals(slowData), 'in order, once')
    for (const [i, client] of idle.entries()) t.equal(await roundTrip(client, `after ${i}`), `after ${i}`, `idle session ${i} echoes after the upgrade`)

    const farNow = upgraded === 'far' ? newPid : farPid
    const resumed = await waitFor(() => pair.far.logs.filter((l) => l.pid === farNow && l.msg === 'pair session resumed').length >= IDLE + 4, 10_000)
    t.ok(resumed, `the far end (pid ${farNow}) resumed every session: ${pair.far.logs.filter((l) => l.pid === farNow && l.msg === 'pair session resumed').length}`)
    // The plain legs are the same sockets, with the keepalive they had.
    const legs = await keepalives(upgraded === 'near' ? pair.nearAdmin : pair.farAdmin)
    t.equal(legs.length, IDLE + 4, 'one plain leg per session in the new process')
    t.ok(legs.every((k) => k !== null && k[0] === 45 && k[1] === 6 && k[2] === 4), 'keepalive read back on every plain leg: idle 45, interval 6, count 4')
    const { response, upload } = await half.finish()
    t.ok(response, 'a session half-closed by its client gets its whole response and end after the upgrade')
    t.ok(upload, 'a session half-closed by its server gets the client\'s whole upload and end after the upgrade')

    for (const client of [...idle, bulkClient, slowClient]) client.end()
    bulkServer.end()
    slowServer.end()
    const closedBy = (proxy: RunningProxy) => proxy.logs.filter((l) => l.msg === 'session closed')
    t.ok(await waitFor(() => closedBy(pair.near).length === IDLE + 4 && closedBy(pair.far).length === IDLE + 4, 10_000), 'one session closed line per session at each end')
    for (const proxy of [pair.near, pair.far]) {
      const lines = closedBy(proxy)
      t.notOk(lines.some((l) => l.pid === oldPid), 'none from the old process')
      t.notOk(lines.some((l) => l.reason === 'pair_lost' || String(l.reason).includes('reset')), 'none lost or reset')
    }
    t.ok(closedBy(pair.near).some((l) => Number(l.bytesToTarget) + Number(l.bytesToClient) === bytes), 'whole counts for the stream at the near end')
  })
}

t.test('a new near end that dies holding the sessions: each is reset at both ends (the far end told by an RST), and the old process serves on', async (t) => {
  const target = await manualTarget(t)
  const pair = await startPairProcesses(t, dir, target.port, 'dies')
  const ends: Array<{ client: Promise<string>; server: Promise<string> }> = []
  for (let i = 0; i < 3; i++) {
    const client = await connect(pair.nearPort)
    t.teardown(() => client.destroy())
    const server = await target.next()
    server.pipe(server)
    t.equal(await roundTrip(client, `before ${i}`), `before ${i}`)
    ends.push({ client: endOf(client), server: endOf(server) })
  }
  // The new release adopts the sessions and resumes them on its own link (the far end moves them
  // there), then dies instead of answering for them.
  pair.entries.near.install(
    `const { loadNative } = await import(${JSON.stringify(NATIVE)})\n` +
      `const n = loadNative().binding\nconst send = n.sendFds\n` +
      `n.sendFds = (sock, payload, fds, ms) => {\n` +
      `  if (!payload.includes('"type":"took"')) return send(sock, payload, fds, ms)\n` +
      `  setTimeout(() => process.kill(process.pid, 'SIGKILL'), 300)\n}\n` +
      `await import(${JSON.stringify(MAIN)})\n`,
  )
  pair.near.proc.kill('SIGUSR2')
  const failed = await pair.near.line((l) => l.msg.startsWith('upgrade failed'), 30_000)
  t.match(String(failed.reason), /3 sessions it was handed reset/, `one line says why: ${String(failed.reason)}`)
  const resumed = pair.far.logs.filter((l) => l.msg === 'pair session resumed')
  t.ok(resumed.length >= 3, `the far end had moved them to the new process's link (then back, to be reset): ${resumed.length} resumes`)
  const failedAt = performance.now()
  for (const [i, end] of ends.entries()) {
    t.equal(await end.client, 'ECONNRESET', `session ${i}: the client gets an RST`)
    const server = await Promise.race([end.server, sleep(5000).then(() => 'nothing within 5 s')])
    t.equal(server, 'ECONNRESET', `session ${i}: so does the server, through the far end, at once (not at the resume window's end)`)
  }
  t.ok(performance.now() - failedAt < 5000)
  const fresh = await connect(pair.nearPort)
  t.teardown(() => fresh.destroy())
  const server = await target.next()
  server.pipe(server)
  t.equal(await roundTrip(fresh, 'fresh'), 'fresh', 'the old process serves on, over the pair')
})
