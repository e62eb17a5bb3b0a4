// One byte pump per thread (native/ka_pump.c keeps its state per N-API environment): two worker
// threads and the main thread each relay byte-exact bulk through a pump of their own at the
// same time (the workers accepting in their pumps too), and terminating one worker mid-relay
// closes that worker's sessions (both peers see the end), frees every descriptor it held (its
// listening socket among them), and leaves the other worker's and the main thread's sessions
// relaying on, untouched.

import t, { type Test } from 'tap'
import { once } from 'node:events'
import { readdirSync, readlinkSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { Socket } from 'node:net'
import { loadNative, nativeBinaryPath } from '../src/native.ts'
import { connect, listen, waitFor } from './helpers/net.ts'
import { payload } from './helpers/payload.ts'

const load = loadNative()
if (!load.ok) throw new Error(`native helper must be built for these tests: ${load.reason}`)
const ADDON = nativeBinaryPath()
const FRONT = fileURLToPath(new URL('./fixtures/pump-front.cjs', import.meta.url))
const { startFront } = createRequire(import.meta.url)(FRONT) as {
  startFront(addon: string, target: number, accept: 'node' | 'pump'): Promise<{ port: number; close(): void }>
}

const MiB = 1024 * 1024
const SESSIONS = 2 // per thread
const DEADLINE = 60_000

/**
 * The process's descriptors, each with what it is ("12 socket:[4711]"): a descriptor that is new
 * is one that was not open before, or whose number now names something else. One that closed
 * meanwhile (the test runner's, the loader's) is no leak.
 */
const openDescriptors = (): string[] =>
  readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      return [`${fd} ${readlinkSync(`/proc/self/fd/${fd}`)}`]
    } catch {
      return [] // closed between the listing and the look
    }
  })

/** A client session through a front: what it sent, what came back. */
class Flow {
  readonly sent: Buffer[] = []
  readonly received: Buffer[] = []
  receivedBytes = 0
  sentBytes = 0
  closed = false
  constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.received.push(d)
      this.receivedBytes += d.length
    })
    socket.on('error', () => {})
    socket.on('close', () => void (this.closed = true))
  }
  send(size: number): void {
    const data = payload(size)
    this.sent.push(data)
    this.sentBytes += size
    this.socket.write(data)
  }
  echoed(): boolean {
    return this.receivedBytes >= this.sentBytes
  }
  exact(): boolean {
    return Buffer.concat(this.received).equals(Buffer.concat(this.sent))
  }
}

async function flows(port: number): Promise<Flow[]> {
  const list: Flow[] = []
  for (let i = 0; i < SESSIONS; i++) list.push(new Flow(await connect(port)))
  return list
}

/** A worker thread running the front on its own pump, accepting there too; resolves once it listens. */
async function startWorker(t: Test, target: number): Promise<{ worker: Worker; port: number }> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads')
    require(workerData.front).startFront(workerData.addon, workerData.target, 'pump').then(({ port }) => parentPort.postMessage(port))`
  // No loaders of the test runner in the worker: it runs the plain CommonJS front.
  const worker = new Worker(code, { eval: true, execArgv: [], workerData: { addon: ADDON, front: FRONT, target } })
  worker.on('error', (err) => t.fail(`worker failed: ${err.message}`))
  const [port] = (await once(worker, 'message')) as [number]
  return { worker, port }
}

t.test('two workers and the main thread relay at once, each on its own pump; terminating one closes only its sessions', async (t) => {
  // The target echoes; it tracks its open sockets (one per session, whichever thread relays it).
  const targetSockets = new Set<Socket>()
  const target = await listen((s) => {
    targetSockets.add(s)
    s.on('close', () => targetSockets.delete(s))
    s.on('error', () => {})
    s.pipe(s)
  })
  const main = await startFront(ADDON, target.port, 'node')
  const b = await startWorker(t, target.port)
  let a: { worker: Worker; port: number } | undefined
  t.teardown(async () => {
    await a?.worker.terminate()
    await b.worker.terminate()
    main.close()
    target.server.close()
    for (const s of targetSockets) s.destroy()
  })

  // The main thread's sessions and worker B's relay at the same time.
  const mainFlows = await flows(main.port)
  const bFlows = await flows(b.port)
  const carriedOn = [...mainFlows, ...bFlows]
  for (const f of carriedOn) f.send(2 * MiB)
  t.ok(await waitFor(() => carriedOn.every((f) => f.echoed()), DEADLINE), 'the main thread and worker B relay at once')
  t.equal(targetSockets.size, 2 * SESSIONS)
  const before = openDescriptors()

  // Worker A joins; all three pumps carry bulk at once.
  a = await startWorker(t, target.port)
  const aFlows = await flows(a.port)
  for (const f of [...carriedOn, ...aFlows]) f.send(4 * MiB)
  t.ok(await waitFor(() => [...carriedOn, ...aFlows].every((f) => f.echoed()), DEADLINE), 'three pumps relay bulk at once')
  t.ok(aFlows.every((f) => f.exact()), 'worker A relays byte-exact')

  // Mid-relay: A's clients stop reading while they send more than the path can hold, so A's
  // pump holds queued bytes and its sockets are full when the worker goes.
  for (const f of aFlows) {
    f.socket.pause()
    f.send(48 * MiB)
  }
  for (const f of carriedOn) f.send(4 * MiB)
  t.ok(await waitFor(() => aFlows.every((f) => f.socket.writableLength > 0), DEADLINE), "worker A's sessions are stalled mid-relay")
  t.equal(targetSockets.size, 3 * SESSIONS, "every session's target leg is open")
  await a.worker.terminate()
  for (const f of aFlows) f.socket.resume()

  t.ok(await waitFor(() => aFlows.every((f) => f.closed), DEADLINE), "worker A's clients see their sessions end")
  t.ok(await waitFor(() => targetSockets.size === 2 * SESSIONS, DEADLINE), "the target sees worker A's target legs end, and only those")
  t.ok(aFlows.every((f) => f.receivedBytes < f.sentBytes), 'they ended mid-relay')
  const refused = await connect(a.port).then((s) => (s.destroy(), 'accepted'), (err: NodeJS.ErrnoException) => err.code)
  t.equal(refused, 'ECONNREFUSED', "worker A's listening socket is closed with it")

  // The others relay on, byte-exact, through and after the termination.
  for (const f of carriedOn) f.send(4 * MiB)
  t.ok(await waitFor(() => carriedOn.every((f) => f.echoed()), DEADLINE), 'the main thread and worker B relay on')
  t.ok(carriedOn.every((f) => f.exact() && !f.closed), 'byte-exact, sessions still open')

  // Nothing of worker A is left: its thread's loop, its pump's epoll set, its legs.
  const leaked = (): string[] => openDescriptors().filter((d) => !before.includes(d))
  await waitFor(() => leaked().length === 0, DEADLINE)
  t.same(leaked(), [], 'no descriptor leaked: none open that was not before worker A')

  for (const f of carriedOn) f.socket.end()
  t.ok(await waitFor(() => carriedOn.every((f) => f.closed), DEADLINE), 'the other sessions end normally')
})
