// A heartbeat that cannot run because the proxy itself is out of descriptors says nothing
// about the target: it is logged as the proxy's own problem and never marks the target
// down (which, with on-down kill, would reset every healthy session to it).

import t from 'tap'
import net, { type Socket } from 'node:net'
import { connect, freePort, listen, sleep } from './helpers/net.ts'
import { startCliProxy } from './helpers/cli.ts'
import { limitDescriptors } from './helpers/fds.ts'

t.test('EMFILE in a heartbeat check: not a target failure, sessions untouched', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const adminPort = await freePort()
  const proxy = await startCliProxy([
    '--target', `127.0.0.1:${port}`,
    '--heartbeat', 'tcp', '--heartbeat-interval', '0.2', '--heartbeat-timeout', '0.2', '--heartbeat-fall', '1',
    '--on-down', 'kill', '--log-level', 'info', '--admin', `127.0.0.1:${adminPort}`,
  ])
  t.teardown(() => proxy.stop('SIGKILL'))
  await proxy.line((l) => l.msg === 'target up')
  // Room for three sessions within the proxy's reserve of 16; 32 admin connections take the rest.
  limitDescriptors(proxy.proc.pid!, 36)
  const sessions = await Promise.all([1, 2, 3].map(() => connect(proxy.port)))
  t.teardown(() => sessions.forEach((c) => c.destroy()))
  for (const s of sessions) s.on('error', () => {})
  // Requests that never finish their headers take what is left (the attack).
  const hogs: Socket[] = []
  t.teardown(() => hogs.forEach((c) => c.destroy()))
  for (let i = 0; i < 40; i++) {
    const c = net.connect({ port: adminPort, host: '127.0.0.1' }, () => c.write('GET /sessions HTTP/1.1\r\n'))
    c.on('error', () => {})
    hogs.push(c)
  }
  const line = await proxy.line((l) => String(l.msg).startsWith('heartbeat check could not run'), 10_000)
  t.match(line, { level: 50, reason: 'local', detail: /^EMFILE/ })
  await sleep(1000)
  t.notOk(proxy.logs.some((l) => l.msg === 'target down'), 'the target was never marked down')
  t.notOk(proxy.logs.some((l) => l.msg === 'session closed'), 'no session was closed')
  for (const s of sessions) {
    s.write('still here')
    t.equal(String(await new Promise<Buffer>((r) => s.once('data', r))), 'still here')
  }
})
