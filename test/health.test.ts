// Health as an operator reads it: /healthz answers 503 while a route has no target up and
// 200 again once one is, and `ka-proxy status` exits 1 and 0 to match. Exit code 1 for
// anything that is neither bad input (2) nor an address in use (3): one line, no stack trace.

import t from 'tap'
import { once } from 'node:events'
import net from 'node:net'
import { request } from 'undici'
import { runCli, spawnProxy } from './helpers/cli.ts'
import { freePort } from './helpers/net.ts'

const HEARTBEAT = ['--heartbeat', 'tcp', '--heartbeat-interval', '0.2', '--heartbeat-timeout', '0.2', '--heartbeat-fall', '1', '--heartbeat-rise', '1']

async function healthz(adminPort: number): Promise<{ status: number; body: any }> {
  const res = await request(`http://127.0.0.1:${adminPort}/healthz`)
  return { status: res.statusCode, body: await res.body.json() }
}

t.test('no target up: /healthz 503 and status exits 1; target back: 200 and 0', async (t) => {
  const targetPort = await freePort()
  const adminPort = await freePort()
  const proxy = spawnProxy(['--listen', '127.0.0.1:0', '--target', `127.0.0.1:${targetPort}`, ...HEARTBEAT, '--admin', `127.0.0.1:${adminPort}`])
  t.teardown(() => proxy.stop('SIGKILL'))
  await proxy.line((l) => l.msg === 'admin listening')
  await proxy.line((l) => l.msg === 'target down')

  const down = await healthz(adminPort)
  t.equal(down.status, 503, '/healthz: 503 while the route has no target up')
  t.match(down.body, { routes: [{ listening: true, targetsUp: 0, targets: 1 }] }, 'with the details')
  t.not(down.body.status, 'ok')
  const unhealthy = runCli(['status', '--admin', `127.0.0.1:${adminPort}`])
  t.equal(unhealthy.status, 1, 'status: exit 1 when unhealthy')
  t.match(unhealthy.stdout, /^health: (?!ok)/, 'and says so')
  t.match(unhealthy.stdout, /\s+yes\s+0\/1$/m, 'listening, 0 of 1 targets up')
  t.equal(unhealthy.stderr, '')

  // The target comes up: one good check (rise 1) and everything is green again.
  const server = net.createServer((s) => s.destroy())
  server.listen(targetPort, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  await proxy.line((l) => l.msg === 'target up' && l.from === 'down')
  const up = await healthz(adminPort)
  t.equal(up.status, 200, '/healthz: 200 once a target is up')
  t.match(up.body, { status: 'ok', routes: [{ targetsUp: 1 }] })
  const healthy = runCli(['status', '--admin', `127.0.0.1:${adminPort}`])
  t.equal(healthy.status, 0, 'status: exit 0 when healthy')
  t.match(healthy.stdout, /^health: ok\n/)
})

t.test('exit 1 for anything else: one line, no stack trace', async (t) => {
  const closed = await freePort()
  const cases: Array<[string, string[], RegExp]> = [
    ['a listen address that is not local', ['--listen', '192.0.2.1:15432', '--target', '127.0.0.1:1'], /^ka-proxy: --listen: cannot listen on 192\.0\.2\.1:15432 \(EADDRNOTAVAIL\)\n$/],
    ['status with no admin API to ask', ['status', '--admin', `127.0.0.1:${closed}`], /^ka-proxy: --admin: cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)\n$/],
  ]
  for (const [what, args, message] of cases) {
    const r = runCli(args)
    t.equal(r.status, 1, `${what}: exit 1`)
    t.match(r.stderr, message, `${what}: one line naming the flag`)
    t.notMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`)
  }
})
