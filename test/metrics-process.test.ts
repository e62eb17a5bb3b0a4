// /metrics carries the process metrics every Node exporter has (prom-client's default
// collectors) and ka_proxy_build_info saying which ka-proxy runs where.

import t from 'tap'
import { pino } from 'pino'
import { request } from 'undici'
import { ProxyApp } from '../src/app.ts'
import { resolveAppConfig } from '../src/config/resolve.ts'
import { SocketControl } from '../src/socket-control.ts'
import { VERSION } from '../src/version.ts'
import { freePort } from './helpers/net.ts'

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
