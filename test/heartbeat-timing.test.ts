// The heartbeat's timing against the README's formula, measured at its worst case. A health
// URL that the test answers by hand stops answering right after a good check, so the next
// `fall` checks must all time out: the target is marked down after exactly `fall` failed
// checks, within interval × fall + timeout (+ a stated slack). It answers again right after a
// failed check: marked up after exactly `rise` good ones, within interval × rise + timeout.

import t from 'tap'
import http, { type ServerResponse } from 'node:http'
import { once } from 'node:events'
import { HEARTBEAT_SLACK_MS, downWithinMs, namedTarget, upWithinMs } from './helpers/heartbeat.ts'
import { waitFor } from './helpers/net.ts'
import { startProxy, type LogLine } from './helpers/proxy.ts'

const HB = { interval: 0.5, timeout: 0.3, fall: 2, rise: 2 }

t.test(`marked down after ${HB.fall} failed checks and up after ${HB.rise} good ones, within the README's bounds`, async (t) => {
  /** What the health URL does with the next request; a switch happens right after a request. */
  let mode: 'answer' | 'hang' = 'answer'
  let after: { request: 'answered' | 'hung'; then: 'answer' | 'hang'; at?: number } | undefined
  const log: Array<{ at: number; how: 'answered' | 'hung' }> = []
  const hung: ServerResponse[] = []
  const web = http.createServer((_req, res) => {
    const how = mode === 'answer' ? 'answered' : 'hung'
    if (how === 'answered') res.end('ok')
    else hung.push(res)
    log.push({ at: Date.now(), how })
    if (after !== undefined && after.at === undefined && after.request === how) {
      mode = after.then
      after.at = Date.now()
    }
  })
  web.listen(0, '127.0.0.1')
  await once(web, 'listening')
  t.teardown(() => {
    for (const res of hung) res.destroy()
    web.closeAllConnections()
    web.close()
  })
  const webPort = (web.address() as { port: number }).port
  const target = await namedTarget(t, 'A')
  const proxy = await startProxy({ target: `127.0.0.1:${target.port}`, heartbeat: { type: `http://127.0.0.1:${webPort}/`, ...HB } })
  t.teardown(() => proxy.stop())
  const line = async (match: (l: LogLine) => boolean): Promise<LogLine> => {
    t.ok(await waitFor(() => proxy.logs.some(match), 10_000), 'the line is logged')
    return proxy.logs.find(match)!
  }
  await line((l) => l.msg === 'target up')

  // Stop answering right after a good check: the worst case of the bound.
  after = { request: 'answered', then: 'hang' }
  await waitFor(() => after!.at !== undefined, 2000)
  const stoppedAt = after.at!
  const down = await line((l) => l.msg === 'target down')
  const downMs = (down.time as number) - stoppedAt
  const failed = log.filter((r) => r.at > stoppedAt && r.at <= (down.time as number))
  t.match(down, { reason: 'timeout', from: 'up', to: 'down' })
  t.same(failed.map((r) => r.how), Array(HB.fall).fill('hung'), `down after exactly ${HB.fall} failed checks`)
  t.ok(downMs <= downWithinMs(HB), `marked down ${downMs} ms after the last good answer (bound ${HB.interval} × ${HB.fall} + ${HB.timeout} s + ${HEARTBEAT_SLACK_MS} ms)`)

  // Answer again right after a failed check.
  after = { request: 'hung', then: 'answer' }
  await waitFor(() => after!.at !== undefined, 2000)
  const resumedAt = after.at!
  const up = await line((l) => l.msg === 'target up' && l.from === 'down')
  const upMs = (up.time as number) - resumedAt
  const good = log.filter((r) => r.at > resumedAt && r.at <= (up.time as number))
  t.same(good.map((r) => r.how), Array(HB.rise).fill('answered'), `up after exactly ${HB.rise} good checks`)
  t.ok(upMs <= upWithinMs(HB), `marked up ${upMs} ms after answering again (bound ${HB.interval} × ${HB.rise} + ${HB.timeout} s + ${HEARTBEAT_SLACK_MS} ms)`)
  t.comment(`worst case measured: down after ${downMs} ms, up after ${upMs} ms (interval ${HB.interval} s, timeout ${HB.timeout} s, fall ${HB.fall}, rise ${HB.rise})`)
})
