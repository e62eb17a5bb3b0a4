// --workers 2: two event loops (the main thread and one worker thread), each with its own pump,
// behind the same listening socket, seen from outside as one proxy. Sessions land on both loops
// and spread evenly when opened one at a time; /sessions and /metrics list every one; a target
// marked down by the main thread's heartbeat resets the sessions of both loops and is refused by
// both; SIGHUP re-tunes the sessions of both (read back); SIGTERM drains both; the session ids
// are the process's, not a loop's; a worker that fails is replaced, its sessions reset on both
// sides and nothing of it left, the main thread's sessions untouched. Bad values of --workers are refused with one line.

import t, { type Test } from 'tap'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import net, { type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { runCli, spawnProxy, type RunningProxy } from './helpers/cli.ts'
import type { LogLine } from './helpers/proxy.ts'
import { connect, endOf, freePort, listen, loopback, manualTarget, readAll, sleep, waitFor } from './helpers/net.ts'
import { payload } from './helpers/payload.ts'
import { relaySockets } from '../bench/lab/ss.ts'
import { socketDescriptors } from '../bench/lab/pids.ts'
import { entryFile, start, twoWayStreams, upgradeTestSetup } from './helpers/upgrade.ts'

interface SessionRow {
  session: number
  worker?: number
  client: string
  legs: { client: { keepalive: { idle: number } } | null; target: { keepalive: { idle: number } } | null }
}

/** An admin API response; the connection is closed after it, so the proxy holds no socket for it afterwards. */
async function admin(port: number, path: string): Promise<string> {
  const res = await request(`http://127.0.0.1:${port}${path}`, { reset: true })
  return res.body.text()
}

async function sessions(port: number): Promise<SessionRow[]> {
  return (JSON.parse(await admin(port, '/sessions')) as { sessions: SessionRow[] }).sessions
}

/** A metric's value in Prometheus text (the first series whose line starts with `series`). */
function metric(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(series))
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1))
}

/** A client whose session is up: one echo came back through it. */
async function echoing(port: number): Promise<Socket> {
  const c = await connect(port)
  c.on('error', () => {})
  const got = once(c, 'data')
  c.write('ping')
  await got
  return c
}

/**
 * ka-proxy --workers 2 with an admin API, once both loops accept. Every port is the kernel's
 * choice, read from the log (a port found free beforehand can be taken by another test meanwhile).
 */
async function startWorkers(t: Test, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ proxy: RunningProxy; port: number; adminPort: number }> {
  const proxy = spawnProxy(['--workers', '2', '--admin', '127.0.0.1:0', ...args], env)
  t.teardown(() => proxy.stop('SIGKILL'))
  const listening = await proxy.line((l) => l.msg === 'listening' && l.worker === undefined, 30_000)
  const admin = await proxy.line((l) => l.msg === 'admin listening', 30_000)
  await proxy.line((l) => l.msg === 'workers started', 30_000)
  const portOf = (line: LogLine): number => Number(String(line.address).split(':').pop())
  return { proxy, port: portOf(listening), adminPort: portOf(admin) }
}

/** The server side: echoes, and keeps its sockets so a test can see them reset. */
async function echoTarget(t: Test): Promise<{ port: number; server: net.Server; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>()
  const { server, port } = await listen((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
    s.pipe(s)
  })
  t.teardown(() => server.close())
  return { port, server, sockets }
}

const perLoop = (rows: SessionRow[]): Map<number, number> => {
  const out = new Map<number, number>()
  for (const r of rows) out.set(r.worker ?? -1, (out.get(r.worker ?? -1) ?? 0) + 1)
  return out
}

t.test('--workers 2: sessions opened one at a time spread over both loops; /sessions and /metrics list all; ids are unique', async (t) => {
  const target = await echoTarget(t)
  const { proxy, port, adminPort } = await startWorkers(t, ['--listen', '127.0.0.1:0', '--target', `127.0.0.1:${target.port}`])
  t.equal(proxy.logs.filter((l) => l.msg === 'listening').length, 2, 'each loop says it listens (the worker with its number)')
  const clients: Socket[] = []
  for (let i = 0; i < 20; i++) clients.push(await echoing(port))
  const rows = await sessions(adminPort)
  t.equal(rows.length, 20, '/sessions lists every session, both loops')
  const loops = perLoop(rows)
  t.same([...loops.keys()].sort(), [0, 1], `every row says its loop: ${JSON.stringify([...loops])}`)
  t.ok(Math.abs((loops.get(0) ?? 0) - (loops.get(1) ?? 0)) <= 2, `opened one at a time, they spread evenly: ${JSON.stringify([...loops])}`)
  t.equal(new Set(rows.map((r) => r.session)).size, 20, 'no two sessions share an id')
  t.ok(rows.every((r) => r.legs.client !== null && r.legs.target !== null), 'both legs of every session are read, on either loop')
  const text = await admin(adminPort, '/metrics')
  t.equal(metric(text, 'ka_proxy_sessions_active{'), 20, 'ka_proxy_sessions_active sums both loops')
  t.equal(metric(text, 'ka_proxy_sessions_total{'), 20, 'ka_proxy_sessions_total sums both loops')
  t.equal(text.split('\n').filter((l) => l.startsWith('ka_proxy_build_info{')).length, 1, 'process-wide metrics once, not per loop')
  t.ok(metric(text, 'process_start_time_seconds') !== undefined, 'the process metrics are there')
  t.equal(metric(text, 'ka_proxy_target_up{'), 1, 'a target is up once, in the main thread\'s view')
  // The least busy loop takes the next sessions: close every session of one loop, and those
  // opened next go there (the other loop may take one more before it sees it is ahead), for
  // each loop in turn.
  let open = clients
  for (const loop of [1, 0]) {
    const onLoop = new Set((await sessions(adminPort)).filter((r) => (r.worker ?? 0) === loop).map((r) => r.client))
    const [leaving, staying] = [open.filter((c) => onLoop.has(`127.0.0.1:${c.localPort}`)), open.filter((c) => !onLoop.has(`127.0.0.1:${c.localPort}`))]
    const closedBefore = proxy.logs.filter((l) => l.msg === 'session closed').length
    for (const c of leaving) c.end()
    await waitFor(() => proxy.logs.filter((l) => l.msg === 'session closed').length === closedBefore + leaving.length, 5000)
    const before = new Set((await sessions(adminPort)).map((r) => r.session))
    const fresh: Socket[] = []
    for (let i = 0; i < 8; i++) fresh.push(await echoing(port))
    const went = (await sessions(adminPort)).filter((r) => !before.has(r.session)).map((r) => r.worker ?? 0)
    t.ok(went.filter((w) => w === loop).length >= 7, `loop ${loop}'s sessions closed (${leaving.length}): the next go there: ${JSON.stringify(went)}`)
    open = [...staying, ...fresh]
  }
  const all = open.length
  for (const c of open) c.end()
  await waitFor(() => proxy.logs.filter((l) => l.msg === 'session closed').length === 20 + 16, 10_000)
  const closed = proxy.logs.filter((l) => l.msg === 'session closed')
  t.equal(closed.length, 20 + 16, `one line per session, from the loop that held it (${all} open at the end)`)
  t.same(new Set(closed.map((l) => l.worker ?? 0)), new Set([0, 1]), 'lines from both loops, a worker\'s with its number')
})

t.test('--workers 2: a target the main thread\'s heartbeat marks down resets the sessions of both loops, and both refuse new clients', async (t) => {
  const target = await echoTarget(t)
  const { proxy, port, adminPort } = await startWorkers(t, ['--listen', '127.0.0.1:0', '--target', `127.0.0.1:${target.port}`, '--heartbeat', 'tcp', '--heartbeat-interval', '0.2', '--heartbeat-timeout', '0.2', '--heartbeat-fall', '1', '--on-down', 'kill'])
  await proxy.line((l) => l.msg === 'target up' && l.worker === undefined)
  const clients: Socket[] = []
  for (let i = 0; i < 8; i++) clients.push(await echoing(port))
  t.same([...perLoop(await sessions(adminPort)).keys()].sort(), [0, 1], 'sessions on both loops')
  t.equal(proxy.logs.filter((l) => l.msg === 'check passed' && l.worker !== undefined).length, 0, 'the worker checks nothing itself')
  const ends = clients.map((c) => endOf(c))
  target.server.close() // the sessions' sockets stay open: only the checks fail
  await proxy.line((l) => l.msg === 'target down' && l.worker === undefined, 5000)
  const bounded = ends.map((e) => Promise.race([e, new Promise<string>((r) => setTimeout(r, 5000, 'still open after 5 s'))]))
  t.same(await Promise.all(bounded), Array(8).fill('ECONNRESET'), 'every client is reset, on both loops (on-down kill)')
  await waitFor(() => proxy.logs.filter((l) => l.msg === 'session closed').length === 8, 5000)
  const killed = proxy.logs.filter((l) => l.msg === 'session closed')
  t.ok(killed.every((l) => l.reason === 'target_down'), 'each ends target_down')
  t.same(new Set(killed.map((l) => l.worker ?? 0)), new Set([0, 1]), 'on both loops')
  // Refusals do not move the balance: bursts of clients until both loops turned one away.
  const refusedBy = (): Set<number> => new Set(proxy.logs.filter((l) => l.reason === 'no_healthy_target' && String(l.msg).startsWith('connection refused')).map((l) => (l.worker as number | undefined) ?? 0))
  let turnedAway = 0
  for (let burst = 0; burst < 20 && refusedBy().size < 2; burst++) {
    const outcomes = await Promise.all(Array.from({ length: 20 }, async () => {
      const c = net.connect({ port, host: '127.0.0.1' })
      c.on('error', () => {})
      return endOf(c)
    }))
    turnedAway += outcomes.filter((o) => o === 'ECONNRESET').length
    await new Promise((r) => setTimeout(r, 1100)) // a refusal line per second per loop at most
  }
  t.ok(turnedAway > 0, `clients are reset at once (${turnedAway})`)
  t.same([...refusedBy()].sort(), [0, 1], 'both loops refuse: the worker follows the main thread\'s view')
  const text = await admin(adminPort, '/metrics')
  t.equal(metric(text, 'ka_proxy_connections_refused_total{'), turnedAway, 'every refusal is counted, summed over the loops')
})

t.test('--workers 2: SIGHUP re-tunes the sessions of both loops (read back); SIGTERM drains both', async (t) => {
  const target = await echoTarget(t)
  const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-workers-'))
  const path = join(dir, 'workers.yaml')
  const write = (idle: number): void => writeFileSync(path, `shutdownGrace: 30\nroutes:\n  - name: db\n    listen: 127.0.0.1:0\n    target: 127.0.0.1:${target.port}\n    keepalive:\n      idle: ${idle}\n`)
  write(60)
  const { proxy, port, adminPort } = await startWorkers(t, ['--config', path])
  const clients: Socket[] = []
  for (let i = 0; i < 6; i++) clients.push(await echoing(port))
  const loops = perLoop(await sessions(adminPort))
  t.same([...loops.keys()].sort(), [0, 1], 'sessions on both loops')
  write(45)
  const from = proxy.logs.length
  proxy.proc.kill('SIGHUP')
  await proxy.line((l) => l.msg === 'config reloaded' && proxy.logs.indexOf(l) >= from)
  const retuned = await Promise.all([0, 1].map((w) => proxy.line((l) => l.msg === 'route re-tuned' && (l.worker ?? 0) === w && proxy.logs.indexOf(l) >= from)))
  for (const [w, line] of retuned.entries()) {
    const n = loops.get(w)!
    t.match(line, { sessions: n, readBack: { legs: 2 * n, matching: 2 * n } }, `loop ${w}: its ${n} sessions re-tuned, every leg read back`)
  }
  const rows = await sessions(adminPort)
  t.ok(rows.length === 6 && rows.every((r) => r.legs.client?.keepalive.idle === 45 && r.legs.target?.keepalive.idle === 45), 'every leg of every session reads idle 45 s')
  clients.push(await echoing(port))
  t.pass('a new session after the reload')
  // SIGTERM: both loops stop accepting; their sessions finish by themselves within the grace.
  const before = proxy.logs.length
  proxy.proc.kill('SIGTERM')
  await proxy.line((l) => l.msg === 'shutting down' && proxy.logs.indexOf(l) >= before)
  await waitFor(() => proxy.logs.some((l) => l.msg === 'draining sessions' && l.worker === 1), 5000)
  t.ok(proxy.logs.some((l) => l.msg === 'draining sessions' && l.worker === 1), 'the worker drains too')
  const refused = net.connect({ port, host: '127.0.0.1' })
  t.equal(await endOf(refused.on('error', () => {})), 'ECONNREFUSED', 'no loop accepts any more')
  for (const c of clients) c.end()
  t.equal(await proxy.exited, 0, 'exit 0 once every session of both loops ended')
  t.equal(proxy.logs.filter((l) => l.msg === 'session closed' && l.reason === 'client_end').length, 7, 'the sessions ended as their clients ended them, none cut')
})

t.test('--workers 2: SIGUSR2 moves the sessions of both loops, streams both ways byte-exact; the new process starts its workers, which take the new sessions', async (t) => {
  // An echo target, except for a connection whose first bytes are "hold": that one is left to the
  // test, for a stream both ways through the upgrade.
  const held: Socket[] = []
  const { server: targetServer, port: targetPort } = await listen((s) => {
    s.on('error', () => {})
    s.once('data', (first: Buffer) => {
      if (first.toString() === 'hold') held.push(s)
      else {
        s.write(first)
        s.pipe(s)
      }
    })
  })
  t.teardown(() => targetServer.close())
  const target = { port: targetPort }
  const { dir } = upgradeTestSetup(t, 'workers-upgrade')
  const adminPort = await freePort()
  const { proxy, port } = await start(t, entryFile(t, dir, 'workers'), ['--target', `127.0.0.1:${target.port}`, '--workers', '2', '--admin', `127.0.0.1:${adminPort}`])
  await proxy.line((l) => l.msg === 'workers started', 30_000)
  const oldPid = proxy.proc.pid!
  const clients: Socket[] = []
  for (let i = 0; i < 10; i++) clients.push(await echoing(port))
  // 4 more, each with 8 MiB in flight both ways through the upgrade (held bytes included).
  const streaming: Socket[] = []
  for (let i = 0; i < 4; i++) {
    const c = await connect(port)
    c.on('error', () => {})
    c.write('hold')
    await waitFor(() => held.length === i + 1, 5000)
    streaming.push(c)
  }
  const streams = streaming.map((c, i) => twoWayStreams(c, held[i]!))
  const before = perLoop(await sessions(adminPort))
  t.same([...before.keys()].sort(), [0, 1], `sessions on both loops: ${JSON.stringify([...before])}`)
  const mark = proxy.logs.length
  proxy.proc.kill('SIGUSR2')
  const done = await proxy.line((l) => proxy.logs.indexOf(l) >= mark && String(l.msg).startsWith('upgrade done'), 60_000)
  const gathered = proxy.logs.slice(mark).find((l) => l.msg === 'upgrade: the worker threads handed their sessions to the main thread')
  t.equal(gathered?.sessions, before.get(1), 'the worker handed its sessions to the main thread')
  t.equal(done.sessions, 14, 'all 14 moved to the new process')
  t.equal(await proxy.exited, 0, 'the old process exits cleanly')
  const newPid = Number(done.newPid)
  await proxy.line((l) => l.msg === 'workers started' && l.pid === newPid, 30_000)
  const echoes = await Promise.all(clients.map(async (c, i) => {
    const got = once(c, 'data')
    c.write(`after ${i}`)
    return String(((await got) as [Buffer])[0])
  }))
  t.same(echoes, clients.map((_, i) => `after ${i}`), 'every session echoes through the new process')
  t.same(await Promise.all(streams.map((st) => st.whole())), Array(4).fill({ arrived: true, up: true, down: true }), 'every byte of each stream arrived, in order, once, both ways')
  const moved = await sessions(adminPort)
  t.equal(moved.length, 14, 'the new process lists them')
  t.ok(moved.every((r) => (r.worker ?? 0) === 0), 'on its main thread')
  const known = new Set(moved.map((r) => r.session))
  for (let i = 0; i < 4; i++) clients.push(await echoing(port))
  const fresh = (await sessions(adminPort)).filter((r) => !known.has(r.session)).map((r) => r.worker ?? 0)
  t.ok(fresh.filter((w) => w === 1).length >= 3, `new sessions go to its worker, the least busy loop: ${JSON.stringify(fresh)}`)
  for (const c of [...clients, ...streaming, ...held]) c.destroy()
  process.kill(newPid, 'SIGTERM')
  t.ok(await waitFor(() => proxy.logs.some((l) => l.pid === newPid && l.msg === 'stopped'), 10_000), 'the new process stops on SIGTERM')
  t.not(newPid, oldPid)
})

/**
 * Makes a worker thread of a running ka-proxy fail as a bug would: through the inspector Node
 * opens for `--inspect` (the process's own, as an operator could use it), an exception is thrown
 * on the worker's event loop that nothing in it catches. Only ka-proxy's first worker thread
 * (module workers.ts or .js) is touched, not a loader's.
 */
async function throwInWorker(t: Test, inspectPort: number): Promise<WebSocket> {
  const [target] = (await (await fetch(`http://127.0.0.1:${inspectPort}/json/list`)).json()) as { webSocketDebuggerUrl: string }[]
  const ws = new WebSocket(target!.webSocketDebuggerUrl)
  t.teardown(() => ws.close())
  await once(ws, 'open')
  let id = 0
  const send = (method: string, params: object): void => ws.send(JSON.stringify({ id: ++id, method, params }))
  const thrown = new Promise<void>((resolve) => {
    ws.addEventListener('message', (e: MessageEvent) => {
      const m = JSON.parse(String(e.data)) as { method?: string; params?: { sessionId: string; workerInfo: { url: string } } }
      if (m.method !== 'NodeWorker.attachedToWorker' || !/\/workers\.[jt]s$/.test(m.params!.workerInfo.url) || id > 1) return
      const expression = "setImmediate(() => { throw new Error('injected by the test') }); 'thrown'"
      send('NodeWorker.sendMessageToWorker', { sessionId: m.params!.sessionId, message: JSON.stringify({ id: 1, method: 'Runtime.evaluate', params: { expression } }) })
      resolve()
    })
  })
  send('NodeWorker.enable', { waitForDebuggerOnStart: false })
  await thrown
  return ws
}

t.test('--workers 2: a worker that fails is logged and replaced; its sessions are reset on both sides, nothing leaks; the other loop\'s sessions go on', async (t) => {
  const target = await echoTarget(t)
  const inspectPort = await freePort()
  const { proxy, port, adminPort } = await startWorkers(t, ['--listen', '127.0.0.1:0', '--target', `127.0.0.1:${target.port}`], { NODE_OPTIONS: `--inspect=127.0.0.1:${inspectPort}` })
  // Sockets, which a session's legs are, not all descriptors: pipes and event descriptors vary with a worker's start-up.
  const socketsAtStart = socketDescriptors([proxy.proc.pid!])
  const clients: Socket[] = []
  for (let i = 0; i < 8; i++) clients.push(await echoing(port))
  const rows = await sessions(adminPort)
  const onWorker = new Set(rows.filter((r) => r.worker === 1).map((r) => r.client))
  const [lost, kept] = [clients.filter((c) => onWorker.has(`127.0.0.1:${c.localPort}`)), clients.filter((c) => !onWorker.has(`127.0.0.1:${c.localPort}`))]
  t.ok(lost.length > 0 && kept.length > 0, `sessions on both loops: ${kept.length} on the main thread, ${lost.length} on the worker`)
  const ends = lost.map((c) => endOf(c))
  const targetsBefore = new Set(target.sockets)
  const targetEnds = new Map([...target.sockets].map((s) => [s, endOf(s)]))
  await sleep(400) // the worker tells the main thread its session count every 250 ms
  const inspector = await throwInWorker(t, inspectPort)
  const exited = await proxy.line((l) => String(l.msg).startsWith('worker exited unexpectedly'), 10_000)
  t.match(exited, { worker: 1, code: 1, level: 50, sessions: lost.length }, 'noticed and logged, with the worker, its exit code and the sessions that ended with it')
  t.ok(proxy.logs.some((l) => l.msg === 'worker failed' && l.worker === 1 && (l.err as { message?: string } | undefined)?.message === 'injected by the test'), 'with the exception that ended it')
  const bounded = ends.map((e) => Promise.race([e, new Promise<string>((r) => setTimeout(r, 5000, 'still open after 5 s'))]))
  t.same(await Promise.all(bounded), Array(lost.length).fill('ECONNRESET'), "the failed worker's clients are reset, not ended as if their sessions were done")
  await waitFor(() => target.sockets.size === kept.length, 5000)
  const closedTargets = [...targetsBefore].filter((s) => !target.sockets.has(s))
  t.same(await Promise.all(closedTargets.map((s) => targetEnds.get(s)!)), Array(lost.length).fill('ECONNRESET'), "the failed worker's target legs are reset too")
  await proxy.line((l) => l.msg === 'worker started again' && l.worker === 1, 30_000)
  t.equal(proxy.proc.exitCode, null, 'the process runs on')
  for (const c of kept) {
    const got = once(c, 'data')
    c.write('still here')
    t.equal(String((await got)[0]), 'still here', `a main-thread session relays on (port ${c.localPort})`)
  }
  t.ok([...targetsBefore].filter((s) => target.sockets.has(s)).length === kept.length, 'the same target connections: the main thread\'s sessions were not touched')
  const after = await sessions(adminPort)
  t.equal(after.length, kept.length, '/sessions lists the survivors only')
  inspector.close()
  await once(inspector, 'close')
  t.ok(await waitFor(() => socketDescriptors([proxy.proc.pid!]) === socketsAtStart + 2 * kept.length, 5000), `no socket left of the failed worker (${socketDescriptors([proxy.proc.pid!])} held, ${socketsAtStart} at the start + 2 per surviving session)`)
  const fresh: Socket[] = []
  for (let i = 0; i < 6; i++) fresh.push(await echoing(port))
  const went = (await sessions(adminPort)).filter((r) => !after.some((a) => a.session === r.session)).map((r) => r.worker ?? 0)
  t.ok(went.filter((w) => w === 1).length >= 3, `the new worker takes new sessions: ${JSON.stringify(went)}`)
  for (const c of [...kept, ...fresh]) c.end()
})

t.test('--workers 2: peers reset while the upgrade carries the worker\'s sessions, bytes held for them, to the main thread and on: each ends once, with its reason; the survivor gets an RST; nothing leaks; the worker\'s other session and the main thread\'s arrive whole', async (t) => {
  const target = await manualTarget(t)
  const { dir } = upgradeTestSetup(t, 'workers-upgrade-reset')
  const adminPort = await freePort()
  const { proxy, port } = await start(t, entryFile(t, dir, 'workers-reset'), ['--target', `127.0.0.1:${target.port}`, '--workers', '2', '--admin', `127.0.0.1:${adminPort}`, '--flush-timeout', '1'])
  await proxy.line((l) => l.msg === 'workers started', 30_000)
  const oldPid = proxy.proc.pid!
  /** A session whose client does not read while its target sends more than the buffers hold. */
  type Slow = { client: Socket; server: Socket; sent: Buffer }
  const slow = async (): Promise<Slow> => {
    const client = await connect(port)
    client.on('error', () => {})
    const server = await target.next()
    server.on('error', () => {})
    client.pause()
    const sent = payload(8 << 20)
    server.write(sent)
    return { client, server, sent }
  }
  // Slow sessions until three are on the worker (the loops take turns; the main thread's are left as they are).
  const onWorker: Slow[] = []
  const others: Slow[] = []
  for (let i = 0; i < 14 && onWorker.length < 3; i++) {
    const s = await slow()
    const address = `127.0.0.1:${s.client.localPort}`
    await waitFor(async () => (await sessions(adminPort)).some((r) => r.client === address), 5000)
    const row = (await sessions(adminPort)).find((r) => r.client === address)
    ;(row?.worker === 1 ? onWorker : others).push(s)
  }
  t.equal(onWorker.length, 3, 'three slow sessions on the worker')
  // a: its client resets; c: its target resets; b: nobody resets, its held bytes must arrive whole.
  const [a, b, c] = onWorker as [Slow, Slow, Slow]
  const legs = [a, c].flatMap((s) => [`127.0.0.1:${s.client.localPort}`, `127.0.0.1:${s.server.remotePort}`])
  await sleep(300) // the buffers fill and the worker's pump holds the rest
  // Addresses taken now: a socket destroyed has none.
  const [aAddress, cAddress] = [a, c].map((s) => `127.0.0.1:${s.client.localPort}`) as [string, string]
  const closed = (address: string): Promise<LogLine> => proxy.line((l) => l.msg === 'session closed' && l.client === address, 15_000)
  const aClosed = closed(aAddress)
  const cClosed = closed(cAddress)
  const aServerEnd = endOf(a.server)
  const cClientEnd = endOf(c.client)
  const mark = proxy.logs.length
  proxy.proc.kill('SIGUSR2')
  // As soon as the worker has let go of its sessions (their descriptors and held bytes on their
  // way to the main thread, then to the new process): one client resets, one target resets.
  await proxy.line((l) => proxy.logs.indexOf(l) >= mark && l.msg === 'upgrade: the worker threads handed their sessions to the main thread', 30_000)
  a.client.resetAndDestroy()
  c.server.resetAndDestroy()
  const done = await proxy.line((l) => proxy.logs.indexOf(l) >= mark && String(l.msg).startsWith('upgrade done'), 60_000)
  const newPid = Number(done.newPid)
  t.equal(await proxy.exited, 0, 'the old process exits')
  t.match(await aServerEnd, /^(ECONNRESET|EPIPE)$/, 'the client reset: the target, the survivor, gets an RST')
  t.match(await aClosed, { reason: 'client_reset', leg: 'client', clientClose: 'failed', targetClose: 'rst' }, 'its one line says client_reset')
  t.equal(await cClientEnd, 'ECONNRESET', 'the target reset: the client, which did not read, gets an RST')
  t.match(await cClosed, { reason: 'target_reset', leg: 'target', targetClose: 'failed', clientClose: 'rst' }, 'its one line says target_reset')
  for (const address of [aAddress, cAddress]) {
    t.equal(proxy.logs.filter((l) => l.msg === 'session closed' && l.client === address).length, 1, `one line for ${address}, from one process`)
  }
  // The worker's unharmed session and the main thread's moved with their held bytes: every byte arrives once read.
  for (const s of [b, ...others]) {
    const got = readAll(s.client)
    s.client.resume()
    s.server.end()
    t.ok((await got).equals(s.sent), `${s === b ? 'the worker' : 'a main-thread'} session's 8 MiB arrive whole (port ${s.client.localPort})`)
  }
  const left = (await relaySockets(loopback(port), loopback(target.port))).filter((s) => s.state !== 'TIME-WAIT')
  t.same(left.filter((s) => legs.includes(`${s.local.host}:${s.local.port}`) || legs.includes(`${s.peer.host}:${s.peer.port}`)).map((s) => s.state), [], 'ss: nothing left of the sessions reset, in either process')
  t.notOk(proxy.logs.some((l) => l.pid === oldPid && l.msg === 'session closed' && l.reason !== 'client_reset' && l.reason !== 'target_reset'), 'the old process ended nothing else')
  process.kill(newPid, 'SIGTERM')
})

t.test('--workers: bad values are refused with one line naming the flag or key', async (t) => {
  for (const value of ['0', 'x', '65', '1.5']) {
    const r = runCli(['check', '--listen', '1', '--target', '127.0.0.1:2', '--workers', value])
    t.not(r.status, 0, `--workers ${value}: non-zero exit`)
    t.match(r.stderr, /--workers/, `--workers ${value}: named`)
    t.equal(r.stderr.trim().split('\n').length, 1, `--workers ${value}: one line`)
  }
  const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-workers-'))
  const path = join(dir, 'bad.yaml')
  writeFileSync(path, 'workers: 100\nroutes:\n  - listen: 1\n    target: 127.0.0.1:2\n')
  const r = runCli(['check', '--config', path])
  t.not(r.status, 0)
  t.match(r.stderr, `${path}: workers`, 'the key named')
  const ok = runCli(['check', '--listen', '1', '--target', '127.0.0.1:2', '--workers', 'auto'])
  t.equal(ok.status, 0, 'auto is valid')
  const noNative = runCli(['--listen', '127.0.0.1:0', '--target', '127.0.0.1:2', '--workers', '2', '--no-native'])
  t.not(noNative.status, 0, 'without the native helper: refused')
  t.match(noNative.stderr, /--workers: 2 workers need the native helper/)
})

