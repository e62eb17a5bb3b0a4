// /metrics carries the process metrics every Node exporter has (prom-client's default
// collectors) and ka_proxy_build_info saying which ka-proxy runs where; the collectors run only
// where an admin API can serve them.

import t from 'tap'
import { readFileSync } from 'node:fs'
import { pino } from 'pino'
import { request } from 'undici'
import { ProxyApp } from '../src/app.ts'
import { resolveAppConfig } from '../src/config/resolve.ts'
import { SocketControl } from '../src/socket-control.ts'
import { VERSION } from '../src/version.ts'
import { startCliProxy } from './helpers/cli.ts'
import { freePort, listen, sleep } from './helpers/net.ts'

for (const native of [true, false]) {
  t.test(`process metrics and build info (native ${native})`, async (t) => {
    const adminPort = await freePort()
    const app = new ProxyApp(new SocketControl({ native }), pino({ level: 'silent' }))
    await app.start(resolveAppConfig({ listen: '127.0.0.1:0', target: '127.0.0.1:1', admin: `127.0.0.1:${adminPort}`, native }))
    t.teardown(() => app.stop(0))
    const text = await (await request(`http://127.0.0.1:${adminPort}/metrics`)).body.text()
    const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1])
    t.ok(value('process_resident_memory_bytes') > 10_000_000, 'RSS')
    t.ok(value('process_open_fds') >= 3, 'open descriptors')
    t.ok(value('nodejs_eventloop_lag_seconds') >= 0, 'event-loop lag')
    t.ok(value('process_cpu_seconds_total') > 0, 'CPU')
    t.match(text, /^# TYPE ka_proxy_build_info gauge$/m)
    t.equal(value(`ka_proxy_build_info\\{version="${VERSION.replace(/\./g, '\\.')}",node="${process.version.replace(/\./g, '\\.')}",native="${native}"\\}`), 1)
  })
}

// The process collectors start with the admin API, the only reader of /metrics: prom-client's
// event-loop lag monitor is a 10 ms timer, and an idle proxy without an admin API woke 100 times
// a second for it (about 300 voluntary context switches in 3 s, against a handful without).
t.test('an idle proxy without an admin API does not wake for metrics nobody can read', async (t) => {
  const proxy = await startCliProxy(['--target', '127.0.0.1:1'])
  t.teardown(() => proxy.stop())
  const switches = (): number => Number(/^voluntary_ctxt_switches:\s+(\d+)$/m.exec(readFileSync(`/proc/${proxy.proc.pid}/status`, 'utf8'))?.[1])
  await sleep(1000)
  const before = switches()
  await sleep(3000)
  const woke = switches() - before
  t.ok(woke < 60, `its main thread woke ${woke} times in 3 s idle`)
})

t.test('an admin API added by a reload serves the process metrics', async (t) => {
  const adminPort = await freePort()
  const app = new ProxyApp(new SocketControl({ native: true }), pino({ level: 'silent' }))
  const config = { listen: '127.0.0.1:0', target: '127.0.0.1:1' }
  await app.start(resolveAppConfig(config))
  t.teardown(() => app.stop(0))
  const names = (await app.metrics.registry.getMetricsAsJSON()).map((m) => m.name)
  t.notOk(names.includes('nodejs_eventloop_lag_seconds'), 'no process collectors without an admin API')
  t.ok(names.includes('ka_proxy_sessions_total'), 'the proxy\'s own metrics are kept all the same')
  // An admin API that cannot listen (its port taken) serves nothing: the collectors stay off.
  const taken = await listen((s) => s.destroy())
  t.teardown(() => taken.server.close())
  await t.rejects(app.reload(resolveAppConfig({ ...config, admin: `127.0.0.1:${taken.port}` })))
  const afterRejected = (await app.metrics.registry.getMetricsAsJSON()).map((m) => m.name)
  t.notOk(afterRejected.includes('nodejs_eventloop_lag_seconds'), 'none after a reload whose admin API could not listen')
  await app.reload(resolveAppConfig({ ...config, admin: `127.0.0.1:${adminPort}` }))
  const text = await (await request(`http://127.0.0.1:${adminPort}/metrics`)).body.text()
  t.match(text, /^nodejs_eventloop_lag_seconds \S+$/m)
  t.match(text, /^process_resident_memory_bytes \S+$/m)
})
