// Client addresses in the session log: read when the client is accepted (so a client that
// resets, or a stream socket already destroyed, is still named), and an IPv4 client of a
// bare-port (dual-stack) listener shown plain, not as [::ffff:127.0.0.1].

import t from 'tap'
import { connect, echoServer, readAll } from './helpers/net.ts'
import { startCliProxy } from './helpers/cli.ts'

// At level debug the 'session opened' line reads the address early (and Node caches it); at
// info nothing does until the session ends, when a destroyed stream socket no longer knows it.
const INFO = ['--log-level', 'info']

for (const native of [true, false]) {
  const mode = native ? 'native pump' : '--no-native'
  const extra = native ? [] : ['--no-native']

  t.test(`${mode}: a bare-port listen logs an IPv4 client as its plain address`, async (t) => {
    const port = await echoServer(t)
    const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`, '--listen', '0', ...INFO, ...extra])
    t.teardown(() => proxy.stop('SIGKILL'))
    t.match(proxy.logs.find((l) => l.msg === 'listening'), { address: /^\[::\]:\d+$/ }, 'dual stack: all interfaces')
    const c = await connect(proxy.port, '127.0.0.1')
    const local = c.localPort
    const got = readAll(c)
    c.end('v4')
    t.equal((await got).toString(), 'v4')
    const line = await proxy.line((l) => l.msg === 'session closed')
    t.equal(line.client, `127.0.0.1:${local}`)
  })

  t.test(`${mode}: the session line names the client, also when the client reset`, async (t) => {
    const port = await echoServer(t)
    const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`, ...INFO, ...extra])
    t.teardown(() => proxy.stop('SIGKILL'))
    const c = await connect(proxy.port)
    const local = c.localPort
    c.write('x')
    await new Promise((r) => c.once('data', r))
    c.resetAndDestroy()
    const line = await proxy.line((l) => l.msg === 'session closed')
    t.match(line, { reason: 'client_reset', client: `127.0.0.1:${local}` })
  })
}
