// A target given by name is resolved again for every new connection and every heartbeat
// check, so a DNS change is followed without a restart. The name lives in /etc/hosts for the
// test (root only: without root it skips, under CI=true it fails) and is moved between
// 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all loopback).

import t, { type Test } from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import { hostsUnwritable, pointName, testName } from './helpers/hosts.ts'
import { whereTo } from './helpers/heartbeat.ts'
import { freePort, waitFor } from './helpers/net.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'
import { startProxy, type LogLine } from './helpers/proxy.ts'

const skip = missingPrerequisite(hostsUnwritable())

/** A server on `host`:`port` that writes its name on connect, then echoes. */
async function namedOn(t: Test, host: string, port: number, name: string): Promise<void> {
  const server = net.createServer((s) => {
    s.on('error', () => {})
    s.write(`${name}\n`)
    s.pipe(s)
  })
  server.listen(port, host)
  await once(server, 'listening')
  t.teardown(() => server.close())
}

t.test('every new connection resolves the name again', { skip }, async (t) => {
  const port = await freePort()
  await namedOn(t, '127.0.0.1', port, 'one')
  await namedOn(t, '127.0.0.2', port, 'two')
  const name = testName(t, 'moving', ['127.0.0.1'])
  const proxy = await startProxy({ target: `${name}:${port}` })
  t.teardown(() => proxy.stop())

  const first = await whereTo(proxy.port)
  t.equal(first.name, 'one', 'the name points at 127.0.0.1')
  pointName(name, ['127.0.0.2'])
  const second = await whereTo(proxy.port)
  t.equal(second.name, 'two', 'after the change, the next connection goes to 127.0.0.2')
  t.ok(await new Promise<boolean>((resolve) => {
    first.socket.once('data', (c: Buffer) => resolve(c.toString() === 'still'))
    first.socket.write('still')
  }), 'the session opened before the change is left alone')
  for (const s of [first.socket, second.socket]) s.end()
  const closed = await proxy.closed(2)
  t.same(closed.map((c) => c.target).sort(), [`127.0.0.1:${port}`, `127.0.0.2:${port}`], 'each summary names the address it reached')
})

t.test('every heartbeat check resolves the name again', { skip }, async (t) => {
  const port = await freePort()
  await namedOn(t, '127.0.0.2', port, 'two')
  const name = testName(t, 'checked', ['127.0.0.2'])
  const proxy = await startProxy({ target: `${name}:${port}`, heartbeat: { type: 'tcp', interval: 0.2, timeout: 0.2, fall: 1, rise: 1 } })
  t.teardown(() => proxy.stop())
  const line = async (match: (l: LogLine) => boolean): Promise<LogLine> => {
    t.ok(await waitFor(() => proxy.logs.some(match), 5000), 'logged')
    return proxy.logs.find(match)!
  }
  await line((l) => l.msg === 'target up')
  // Nothing listens on 127.0.0.3: only a check that resolves the name again can notice.
  pointName(name, ['127.0.0.3'])
  t.match(await line((l) => l.msg === 'target down'), { reason: 'refused' }, 'the name now points where nothing listens: down')
  pointName(name, ['127.0.0.2'])
  await line((l) => l.msg === 'target up' && l.from === 'down')
  t.equal((await whereTo(proxy.port)).name, 'two', 'pointed back: up, and relaying')
})
