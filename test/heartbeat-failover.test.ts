// An HTTP health endpoint (the Patroni pattern: one URL per node, 200 on the primary,
// 503 elsewhere) flipping between two targets drives failover: the target answering 503
// is marked down, its sessions are reset, new connections go to the other. Round robin
// spreads new connections over the healthy targets only.

import t from 'tap'
import { HEARTBEAT_SLACK_MS, downWithinMs, healthEndpoint, namedTarget, whereTo } from './helpers/heartbeat.ts'
import { endOf, waitFor } from './helpers/net.ts'
import { startProxy, type LogLine, type TestProxy } from './helpers/proxy.ts'

const HB = { interval: 0.2, timeout: 0.2, fall: 2, rise: 2 }
const BOUND_MS = downWithinMs(HB)


const lineOf = (proxy: TestProxy, match: (l: LogLine) => boolean): Promise<LogLine> =>
  waitFor(() => proxy.logs.some(match), 10_000).then(() => proxy.logs.find(match)!)

t.test('a health URL flipping 200/503 moves new connections and resets the sessions of the target marked down', async (t) => {
  const [a, b] = await Promise.all([namedTarget(t, 'A'), namedTarget(t, 'B')])
  const web = await healthEndpoint(t)
  const proxy = await startProxy({
    target: `127.0.0.1:${a.port},127.0.0.1:${b.port}`,
    heartbeat: { type: `http://127.0.0.1:${web.port}/{port}`, ...HB },
  })
  t.teardown(() => proxy.stop())
  const A = `127.0.0.1:${a.port}`
  const B = `127.0.0.1:${b.port}`
  // Both up before the first connection: on a busy machine a first probe can miss its 0.2 s and
  // mark a target down from unknown, and then the first connection would not go to A.
  await Promise.all([A, B].map((target) => lineOf(proxy, (l) => l.msg === 'target up' && l.target === target)))

  const onA = await whereTo(proxy.port)
  t.equal(onA.name, 'A', 'both healthy: the first')
  const onAEnd = endOf(onA.socket)

  web.status.set(a.port, 503)
  const flippedAt = Date.now()
  const down = await lineOf(proxy, (l) => l.msg === 'target down' && l.target === A && (l.time as number) >= flippedAt)
  t.match(down, { from: 'up', to: 'down', reason: 'http_status', detail: 'HTTP 503', onDown: 'kill', closed: 1 })
  t.equal(await onAEnd, 'ECONNRESET', 'its session: reset')
  const detectedMs = (down.time as number) - flippedAt
  t.ok(detectedMs <= BOUND_MS, `marked down ${detectedMs} ms after the flip`)
  t.comment(`http detection: marked down ${detectedMs} ms after 503 (bound ${BOUND_MS - HEARTBEAT_SLACK_MS} ms + ${HEARTBEAT_SLACK_MS} ms)`)
  t.match((await proxy.closed())[0], { reason: 'target_down', leg: 'target', clientClose: 'rst', target: A })

  const onB = await whereTo(proxy.port)
  t.equal(onB.name, 'B', 'new connections go to the other')
  const onBEnd = endOf(onB.socket)

  // The primary moves back.
  web.status.set(a.port, 200)
  web.status.set(b.port, 503)
  const movedAt = Date.now()
  await lineOf(proxy, (l) => l.msg === 'target up' && l.target === A && l.from === 'down' && (l.time as number) >= movedAt)
  await lineOf(proxy, (l) => l.msg === 'target down' && l.target === B && (l.time as number) >= movedAt)
  t.equal(await onBEnd, 'ECONNRESET')
  const back = await whereTo(proxy.port)
  t.equal(back.name, 'A', 'used again once up')
  back.socket.destroy()
})

t.test('round robin: each healthy target in turn; a target marked down is skipped', async (t) => {
  const [a, b, c] = await Promise.all([namedTarget(t, 'A'), namedTarget(t, 'B'), namedTarget(t, 'C')])
  const web = await healthEndpoint(t)
  web.status.set(c.port, 503)
  const proxy = await startProxy({
    target: [a, b, c].map((s) => `127.0.0.1:${s.port}`).join(','),
    balance: 'roundrobin',
    heartbeat: { type: `http://127.0.0.1:${web.port}/{port}`, ...HB },
  })
  t.teardown(() => proxy.stop())
  await lineOf(proxy, (l) => l.msg === 'target down' && l.target === `127.0.0.1:${c.port}`)
  await Promise.all([a, b].map((s) => lineOf(proxy, (l) => l.msg === 'target up' && l.target === `127.0.0.1:${s.port}`)))
  const names: string[] = []
  for (let i = 0; i < 6; i++) {
    const { socket, name } = await whereTo(proxy.port)
    names.push(name)
    socket.destroy()
  }
  t.same(names, ['A', 'B', 'A', 'B', 'A', 'B'])
})
