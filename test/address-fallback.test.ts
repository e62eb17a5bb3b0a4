// A target name with several addresses: each is tried in turn, in the resolver's order, as
// net.connect does. A name resolving to ::1 and then 127.0.0.1 (from /etc/hosts, so root is
// needed: without it the test skips, under CI=true it fails): with both listening the first
// address serves; with ::1 refusing, ::1 is tried first and refused, then 127.0.0.1 serves.

import t from 'tap'
import { promises as dns } from 'node:dns'
import net from 'node:net'
import { once } from 'node:events'
import { testName, hostsUnwritable } from './helpers/hosts.ts'
import { connect, listen } from './helpers/net.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'
import { startProxy, type TestProxy } from './helpers/proxy.ts'

const skip = missingPrerequisite(hostsUnwritable())

/** A server on `host`:`port` that writes its name on connect. */
async function named(host: string, port: number, name: string): Promise<net.Server> {
  const server = net.createServer((s) => {
    s.on('error', () => {})
    s.end(`${name}\n`)
  })
  server.listen(port, host)
  await once(server, 'listening')
  return server
}

async function answerFrom(proxy: TestProxy): Promise<string> {
  const client = await connect(proxy.port)
  let text = ''
  client.on('data', (c: Buffer) => (text += c.toString()))
  await once(client, 'end')
  client.end()
  return text.trim()
}

t.test('a name with ::1 then 127.0.0.1: tried in that order', { skip }, async (t) => {
  const name = testName(t, 'two-addresses', ['::1', '127.0.0.1'])
  const addresses = (await dns.lookup(name, { all: true })).map((a) => a.address)
  // As root nothing excuses a skip here: a missing IPv6 loopback is a failure.
  t.same(addresses, ['::1', '127.0.0.1'], 'the name resolves to ::1, then 127.0.0.1')
  if (addresses.join() !== '::1,127.0.0.1') return

  const v4 = await listen((s) => {
    s.on('error', () => {})
    s.end('v4\n')
  })
  t.teardown(() => v4.server.close())
  const port = v4.port
  const proxy = await startProxy({ target: `${name}:${port}` })
  t.teardown(() => proxy.stop())

  // Both addresses listening: the first one the resolver gives serves.
  const v6 = await named('::1', port, 'v6')
  t.equal(await answerFrom(proxy), 'v6', '::1 is tried first, and answers')
  t.match((await proxy.closed())[0], { target: `[::1]:${port}` }, 'the summary names ::1')
  await new Promise((r) => v6.close(r))

  // ::1 refuses now: tried first, refused, then 127.0.0.1.
  t.equal(await answerFrom(proxy), 'v4', 'the second address serves once the first refuses')
  const [closed] = await proxy.closed()
  t.match(closed, { target: `127.0.0.1:${port}` }, 'the summary names the address that answered')
  const attempts = proxy.logs.filter((l) => l.msg === 'target address failed, trying the next' && l.session === closed!.session)
  t.same(attempts.map((l) => [l.target, l.error]), [[`[::1]:${port}`, 'ECONNREFUSED']], '::1 was tried first and refused, once')
})
