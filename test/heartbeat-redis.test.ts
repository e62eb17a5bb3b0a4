// Two real redis servers behind an in-process proxy with a `redis` heartbeat, given as the
// same object a config file's route carries. Frozen with SIGSTOP: sessions reset in time,
// a command in flight fails instead of hanging, new connections go to the second; both
// frozen: new clients are refused at once; resumed: the first is used again.

import t from 'tap'
import net from 'node:net'
import { freeze, thaw } from '../bench/lab/pids.ts'
import { HEARTBEAT_SLACK_MS, downWithinMs, upWithinMs } from './helpers/heartbeat.ts'
import { endOf, waitFor } from './helpers/net.ts'
import { startProxy } from './helpers/proxy.ts'
import { redisMissing, respConnect, startRedis, type RespClient } from './helpers/redis.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'

const HB = { type: 'redis', interval: 0.3, timeout: 0.3, fall: 2, rise: 2 }
const BOUND_MS = downWithinMs(HB)

const missing = redisMissing()
if (missingPrerequisite(missing)) {
  t.pass(`skipped: ${missing}`, { skip: true })
} else {
  const [first, second] = await Promise.all([startRedis(), startRedis()])
  t.teardown(() => Promise.all([first.stop(), second.stop()]))
  const proxy = await startProxy({ target: `127.0.0.1:${first.port},127.0.0.1:${second.port}`, heartbeat: HB, failback: 'auto' }) // the return to the first is checked (manual is the default)
  t.teardown(() => proxy.stop())
  const FIRST = `127.0.0.1:${first.port}`
  const line = (match: (l: (typeof proxy.logs)[number]) => boolean) => waitFor(() => proxy.logs.some(match), 10_000).then(() => proxy.logs.find(match)!)
  /** Each server holds its own name under the key `name`. */
  const whoAnswers = (c: RespClient): Promise<string> => c.command('GET', 'name')

  t.test('frozen redis: sessions reset in time, new connections go to the second, none healthy refused, resumed used again', async (t) => {
    for (const [server, name] of [[first, 'first'], [second, 'second']] as const) {
      const direct = await respConnect(server.port)
      t.equal(await direct.command('SET', 'name', name), '+OK')
      direct.socket.destroy()
    }
    await line((l) => l.msg === 'target up' && l.target === FIRST)
    const clients = await Promise.all([respConnect(proxy.port), respConnect(proxy.port)])
    for (const c of clients) t.equal(await whoAnswers(c), 'first', 'first healthy target wins')

    freeze(first.pid)
    const frozenAt = Date.now()
    const failures = await Promise.all(
      clients.map((c) => c.command('PING').then((reply) => ({ reply, ms: Date.now() - frozenAt }), (err: Error) => ({ reply: err.message, ms: Date.now() - frozenAt }))),
    )
    for (const f of failures) {
      t.not(f.reply, '+PONG', `the command failed: ${f.reply}`)
      t.ok(f.ms <= BOUND_MS, `within ${BOUND_MS} ms (${f.ms} ms)`)
    }
    const down = await line((l) => l.msg === 'target down' && l.target === FIRST)
    const detectedMs = (down.time as number) - frozenAt
    t.match(down, { from: 'up', to: 'down', reason: 'timeout', onDown: 'kill', closed: 2 })
    t.ok(detectedMs <= BOUND_MS, `marked down ${detectedMs} ms after SIGSTOP (bound ${BOUND_MS - HEARTBEAT_SLACK_MS} ms + ${HEARTBEAT_SLACK_MS} ms)`)
    t.comment(`redis detection: marked down after ${detectedMs} ms, commands failed after ${failures.map((f) => f.ms).join(', ')} ms; bound ${BOUND_MS - HEARTBEAT_SLACK_MS} ms (+${HEARTBEAT_SLACK_MS} ms)`)
    const [a, b] = await proxy.closed(2)
    t.match([a, b], [{ reason: 'target_down', clientClose: 'rst' }, { reason: 'target_down', clientClose: 'rst' }])

    const during = await respConnect(proxy.port)
    t.equal(await whoAnswers(during), 'second', 'a new connection goes to the second')
    during.socket.destroy()

    freeze(second.pid)
    await line((l) => l.msg === 'target down' && l.target === `127.0.0.1:${second.port}`)
    const refusedAt = Date.now()
    // The RST may arrive before the connect is reported: the error is then the connect's.
    const refused = net.connect({ port: proxy.port, host: '127.0.0.1' })
    t.equal(await endOf(refused), 'ECONNRESET', 'none healthy: the client is refused with an RST')
    t.ok(Date.now() - refusedAt < 500, `at once (${Date.now() - refusedAt} ms)`)
    t.match(await line((l) => l.msg === 'connection refused: no healthy target'), { level: 40, targets: [FIRST, `127.0.0.1:${second.port}`] })

    thaw(first.pid)
    thaw(second.pid)
    const thawedAt = Date.now()
    const up = await line((l) => l.msg === 'target up' && l.target === FIRST && l.from === 'down')
    const riseMs = (up.time as number) - thawedAt
    t.ok(riseMs <= upWithinMs(HB), `up again ${riseMs} ms after SIGCONT (bound ${upWithinMs(HB)} ms)`)
    const after = await respConnect(proxy.port)
    t.equal(await whoAnswers(after), 'first', 'the first is used again')
    after.socket.destroy()
  })
}
