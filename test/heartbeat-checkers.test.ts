// Each checker against real sockets: up, down (refused, closed), timeout, garbage; pg and
// redis against the real servers, frozen with SIGSTOP; then the scheduler and hysteresis.

import t, { type Test } from 'tap'
import http from 'node:http'
import { once } from 'node:events'
import { decodeBytes } from '../src/config/heartbeat.ts'
import type { CheckSpec } from '../src/config/heartbeat.ts'
import { TargetHealth } from '../src/heartbeat/health.ts'
import { HeartbeatScheduler, type CheckOutcome } from '../src/heartbeat/scheduler.ts'
import { freeze, thaw } from '../bench/lab/pids.ts'
import { checkOnce, fullListener, server } from './helpers/heartbeat.ts'
import { endOf, freePort, sleep } from './helpers/net.ts'
import { postgresUnavailable, startLocalPostgres } from '../bench/lab/postgres.ts'
import { redisMissing, startRedis } from './helpers/redis.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'

const TIMEOUT = 300

/** A server that answers its first bytes (or the connect, with `onConnect`) with `reply`. */
const answering = (reply: string | Buffer, onConnect = false) =>
  server(t, (s) => {
    if (onConnect) s.write(reply)
    else s.once('data', () => s.write(reply))
  })
const silent = () => server(t, () => {})
const closing = () => server(t, (s) => s.end())

const SOCKET_CHECKS: Array<[string, CheckSpec, string]> = [
  ['pg', { type: 'pg' }, 'N'],
  ['redis', { type: 'redis' }, '+PONG\r\n'],
  ['send/expect', { type: 'send', send: decodeBytes('HELLO\\n', 'send'), expect: decodeBytes('OK ', 'expect') }, 'OK ready\n'],
]

for (const [name, spec, good] of SOCKET_CHECKS) {
  t.test(`${name}: up, refused, closed, silent, garbage`, async (t) => {
    t.match(await checkOnce(spec, (await answering(good)).port, TIMEOUT), { ok: true }, 'the expected reply: up')
    t.match(await checkOnce(spec, await freePort(), TIMEOUT), { ok: false, reason: 'refused' })
    t.match(await checkOnce(spec, (await closing()).port, TIMEOUT), { ok: false, reason: 'closed' })
    const quiet = await silent()
    const slow = await checkOnce(spec, quiet.port, TIMEOUT)
    t.match(slow, { ok: false, reason: 'timeout' }, 'no answer: fails')
    t.ok(slow.latencyMs >= TIMEOUT - 2 && slow.latencyMs < TIMEOUT + 150, `after the timeout (${slow.latencyMs} ms)`)
    const [s] = quiet.sockets
    t.ok(s, 'the check connected')
    t.equal(await Promise.race([endOf(s!), sleep(1000).then(() => 'still open')]), 'end', 'the check closed its connection')
    t.match(await checkOnce(spec, (await answering('HTTP/1.1 400 Bad Request\r\n\r\n')).port, TIMEOUT), { ok: false, reason: 'bad_reply' }, 'garbage: fails')
  })
}

t.test('tcp: up on connect, refused, and a connect that never completes times out', async (t) => {
  t.match(await checkOnce({ type: 'tcp' }, (await silent()).port, TIMEOUT), { ok: true })
  t.match(await checkOnce({ type: 'tcp' }, await freePort(), TIMEOUT), { ok: false, reason: 'refused' })
  const hung = await checkOnce({ type: 'tcp' }, await fullListener(t), TIMEOUT)
  t.match(hung, { ok: false, reason: 'timeout' })
  t.ok(hung.latencyMs >= TIMEOUT - 2, `after the timeout (${hung.latencyMs} ms)`)
})

t.test('pg: an SSLRequest answered with S counts as up; other answers do not', async (t) => {
  t.match(await checkOnce({ type: 'pg' }, (await answering('S')).port, TIMEOUT), { ok: true })
  const e = await checkOnce({ type: 'pg' }, (await answering('E\0\0\0\x08junk')).port, TIMEOUT)
  t.match(e, { ok: false, reason: 'bad_reply', detail: /expected 'S' or 'N' to an SSLRequest, got "E\\x00/ })
})

t.test('redis: -NOAUTH and -NOPERM are up (the server answers); -LOADING is not', async (t) => {
  t.match(await checkOnce({ type: 'redis' }, (await answering('-NOAUTH Authentication required.\r\n')).port, TIMEOUT), { ok: true })
  t.match(await checkOnce({ type: 'redis' }, (await answering('-NOPERM no permission\r\n')).port, TIMEOUT), { ok: true })
  t.match(await checkOnce({ type: 'redis' }, (await answering('-LOADING Redis is loading\r\n')).port, TIMEOUT), {
    ok: false,
    reason: 'bad_reply',
    detail: 'expected +PONG, got "-LOADING Redis is loading"',
  })
  // The reply line may come in pieces.
  const split = await server(t, (s) => s.once('data', () => {
    s.write('+PO')
    setTimeout(() => s.write('NG\r\n'), 50)
  }))
  t.match(await checkOnce({ type: 'redis' }, split.port, TIMEOUT), { ok: true })
})

t.test('send/expect: the server may speak first; a wrong prefix fails at once', async (t) => {
  const banner = await answering('SSH-2.0-test\r\n', true)
  t.match(await checkOnce({ type: 'send', send: Buffer.alloc(0), expect: Buffer.from('SSH-') }, banner.port, TIMEOUT), { ok: true })
  const wrong = await checkOnce({ type: 'send', send: Buffer.alloc(0), expect: Buffer.from('SSH-') }, (await answering('220 smtp\r\n', true)).port, TIMEOUT)
  t.match(wrong, { ok: false, reason: 'bad_reply', detail: 'expected a reply starting "SSH-", got "220 smtp\\r\\n"' })
  t.ok(wrong.latencyMs < 100, 'no wait for the timeout')
  const sent: Buffer[] = []
  const binary = await server(t, (s) => s.once('data', (d: Buffer) => {
    sent.push(d)
    s.write(Buffer.from([0xfe, 0x00, 0x01]))
  }))
  t.match(await checkOnce({ type: 'send', send: decodeBytes('\\x00\\x01\\r\\n', 'send'), expect: decodeBytes('\\xfe\\0', 'expect') }, binary.port, TIMEOUT), { ok: true })
  t.same(sent[0], Buffer.from([0, 1, 13, 10]), 'escapes decoded to bytes')
})

t.test('http: 2xx up, 503 down, slow times out, not HTTP fails, refused; {host} and {port} name the target', async (t) => {
  const paths: string[] = []
  const web = http.createServer((req, res) => {
    paths.push(req.url!)
    if (req.url === '/slow') return
    res.statusCode = req.url === '/down' ? 503 : req.url === '/created' ? 201 : 200
    res.end('body')
  })
  web.listen(0, '127.0.0.1')
  await once(web, 'listening')
  t.teardown(() => {
    web.closeAllConnections()
    web.close()
  })
  const webPort = (web.address() as { port: number }).port
  const url = (path: string): CheckSpec => ({ type: 'http', url: `http://127.0.0.1:${webPort}${path}` })
  t.match(await checkOnce(url('/ok'), 5432, TIMEOUT), { ok: true })
  t.match(await checkOnce(url('/created'), 5432, TIMEOUT), { ok: true })
  t.match(await checkOnce(url('/down'), 5432, TIMEOUT), { ok: false, reason: 'http_status', detail: 'HTTP 503' })
  const slow = await checkOnce(url('/slow'), 5432, TIMEOUT)
  t.match(slow, { ok: false, reason: 'timeout' })
  t.ok(slow.latencyMs < TIMEOUT + 150, `slow fails after the timeout (${slow.latencyMs} ms)`)
  t.match(await checkOnce({ type: 'http', url: `http://{host}:${webPort}/t/{port}` }, 6379, TIMEOUT), { ok: true })
  t.equal(paths.at(-1), '/t/6379', 'the target port went into the URL')
  const garbage = await answering('SSH-2.0-not-http\r\n', true)
  t.match(await checkOnce({ type: 'http', url: `http://127.0.0.1:${garbage.port}/` }, 1, TIMEOUT), { ok: false, reason: 'bad_reply' })
  t.match(await checkOnce({ type: 'http', url: `http://127.0.0.1:${await freePort()}/` }, 1, TIMEOUT), { ok: false, reason: 'refused' })
  const closed = await closing()
  t.match(await checkOnce({ type: 'http', url: `http://127.0.0.1:${closed.port}/` }, 1, TIMEOUT), { ok: false, reason: 'closed' })
  // Each check on a connection of its own: the server saw one connection per request.
  let connections = 0
  web.on('connection', () => connections++)
  for (let i = 0; i < 3; i++) await checkOnce(url('/ok'), 1, TIMEOUT)
  t.equal(connections, 3, 'a new connection per check')
})

const pgMissing = await postgresUnavailable()
t.test('pg against PostgreSQL 15: up; a SIGSTOPped postmaster fails; SIGCONT: up again', { skip: missingPrerequisite(pgMissing) }, async (t) => {
  const db = await startLocalPostgres()
  t.teardown(() => db.stop())
  t.match(await checkOnce({ type: 'pg' }, db.port, TIMEOUT), { ok: true })
  // Only the postmaster: its kernel still accepts, but no backend is forked to answer.
  process.kill(db.pid, 'SIGSTOP')
  const frozen = await checkOnce({ type: 'pg' }, db.port, TIMEOUT)
  process.kill(db.pid, 'SIGCONT')
  t.match(frozen, { ok: false, reason: 'timeout' }, 'the hung postmaster fails the check')
  t.match(await checkOnce({ type: 'tcp' }, db.port, TIMEOUT), { ok: true }, 'while a tcp check would pass: the kernel answers')
  t.match(await checkOnce({ type: 'pg' }, db.port, 2000), { ok: true }, 'resumed: up')
})

t.test('redis against redis-server: up, -NOAUTH up, frozen fails, resumed up', { skip: missingPrerequisite(redisMissing()) }, async (t) => {
  const open = await startRedis()
  const locked = await startRedis(['--requirepass', 'secret'])
  t.teardown(() => Promise.all([open.stop(), locked.stop()]))
  t.match(await checkOnce({ type: 'redis' }, open.port, TIMEOUT), { ok: true })
  t.match(await checkOnce({ type: 'redis' }, locked.port, TIMEOUT), { ok: true }, 'password required: still up')
  freeze(open.pid)
  const frozen = await checkOnce({ type: 'redis' }, open.port, TIMEOUT)
  thaw(open.pid)
  t.match(frozen, { ok: false, reason: 'timeout' })
  t.match(await checkOnce({ type: 'redis' }, open.port, TIMEOUT), { ok: true })
})

/**
 * Counts the unref'd timers (the scheduler's kind; the test's own sleeps are ref'd) that are
 * pending: set, not yet fired, not cleared. process.getActiveResourcesInfo() lists only ref'd
 * timers, so it cannot see them.
 */
function unrefTimerSpy(t: Test): { pending(): number; maxPending(): number } {
  const realSet = globalThis.setTimeout
  const realClear = globalThis.clearTimeout
  const pending = new Set<NodeJS.Timeout>()
  let max = 0
  globalThis.setTimeout = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const timer: NodeJS.Timeout = realSet((...a: unknown[]) => {
      pending.delete(timer)
      fn(...a)
    }, ms, ...args)
    const unref = timer.unref.bind(timer)
    timer.unref = () => {
      pending.add(timer)
      max = Math.max(max, pending.size)
      return unref()
    }
    return timer
  }) as typeof setTimeout
  globalThis.clearTimeout = ((timer: NodeJS.Timeout | undefined) => {
    if (timer !== undefined) pending.delete(timer)
    realClear(timer)
  }) as typeof clearTimeout
  t.teardown(() => {
    globalThis.setTimeout = realSet
    globalThis.clearTimeout = realClear
  })
  return { pending: () => pending.size, maxPending: () => max }
}

t.test('scheduler: fixed rate, no overlap even when a check lasts its whole interval, slow checks fail at their timeout, one timer for all', async (t) => {
  const timers = unrefTimerSpy(t)
  const scheduler = new HeartbeatScheduler()
  const outcomes: Record<string, CheckOutcome[]> = { fast: [], hung: [], slow: [] }
  const running: Record<string, number> = { hung: 0, slow: 0 }
  const maxRunning: Record<string, number> = { hung: 0, slow: 0 }
  const enter = (name: string): void => {
    running[name]!++
    maxRunning[name] = Math.max(maxRunning[name]!, running[name]!)
  }
  const started = performance.now()
  const stops = [
    scheduler.add({ intervalMs: 100, timeoutMs: 50, run: async () => {}, report: (o) => outcomes.fast!.push(o) }),
    // Timeout as long as the interval (the most the config allows): each check times out
    // exactly when the next is due, so a scheduler that starts before settling overlaps.
    scheduler.add({
      intervalMs: 100,
      timeoutMs: 100,
      run: (signal) => {
        enter('hung')
        return new Promise((_, reject) => signal.addEventListener('abort', () => {
          running.hung!--
          reject(new Error('aborted'))
        }))
      },
      report: (o) => outcomes.hung!.push(o),
    }),
    // Answers after 90 to 110 ms: sometimes just in time, sometimes just too late.
    scheduler.add({
      intervalMs: 100,
      timeoutMs: 100,
      run: (signal) => {
        enter('slow')
        return new Promise<void>((resolve, reject) => {
          // The scheduler aborts every settled check (to close its connection): count it once.
          const done = setTimeout(() => {
            signal.removeEventListener('abort', aborted)
            running.slow!--
            resolve()
          }, 90 + Math.random() * 20)
          const aborted = (): void => {
            clearTimeout(done)
            running.slow!--
            reject(new Error('aborted'))
          }
          signal.addEventListener('abort', aborted)
        })
      },
      report: (o) => outcomes.slow!.push(o),
    }),
  ]
  t.equal(timers.pending(), 1, 'three checks scheduled: one timer')
  await sleep(1000)
  t.equal(timers.pending(), 1, 'still one timer while they run')
  for (const stop of stops) stop()
  t.equal(timers.pending(), 0, 'no timer left behind once every check is stopped')
  t.equal(timers.maxPending(), 1, 'never more than one timer at a time')
  const elapsed = performance.now() - started
  const expected = Math.floor(elapsed / 100)
  t.ok(Math.abs(outcomes.fast!.length - expected) <= 1, `fast: ${outcomes.fast!.length} checks in ${Math.round(elapsed)} ms`)
  t.ok(outcomes.fast!.every((o) => o.ok))
  t.ok(Math.abs(outcomes.hung!.length - expected) <= 1, `hung: ${outcomes.hung!.length} checks`)
  t.ok(outcomes.hung!.every((o) => !o.ok && o.reason === 'timeout' && o.latencyMs >= 99 && o.latencyMs < 150), 'each hung check fails at its timeout')
  t.ok(outcomes.slow!.length >= expected - 2, `slow: ${outcomes.slow!.length} checks`)
  t.same(maxRunning, { hung: 1, slow: 1 }, 'a target never has two checks running')
  t.same(running, { hung: 0, slow: 0 }, 'every check still running at its timeout was aborted (its connection would be closed)')
  t.equal(scheduler.size, 0)
})

t.test('hysteresis: fall failures mark down, rise successes mark up, a contrary result resets the count', async (t) => {
  const h = new TargetHealth(3, 2)
  t.same(h.record(true), { from: 'unknown', to: 'up' }, 'the first result decides')
  t.equal(h.record(false), undefined)
  t.equal(h.record(false), undefined)
  t.equal(h.record(true), undefined, 'a success in between resets the count')
  t.equal(h.record(false), undefined)
  t.equal(h.record(false), undefined)
  t.same(h.record(false), { from: 'up', to: 'down' }, 'three in a row')
  t.equal(h.record(true), undefined)
  t.equal(h.record(false), undefined)
  t.equal(h.record(true), undefined)
  t.same(h.record(true), { from: 'down', to: 'up' }, 'two in a row')
  t.same(new TargetHealth(3, 2).record(false), { from: 'unknown', to: 'down' }, 'a first failure marks down at once')
})
