// Clients turned away: every kind counted in ka_proxy_connections_refused_total and logged
// at most once a second per kind, with a count, however many arrive.

import t, { type Test } from 'tap'
import net, { type Socket } from 'node:net'
import { request } from 'undici'
import { connect, freePort, listen, sleep, waitFor } from './helpers/net.ts'
import { startCliProxy } from './helpers/cli.ts'
import { exhaustDescriptors, limitDescriptors } from './helpers/fds.ts'

async function holdingServer(t: Test): Promise<number> {
  const { server, port } = await listen(() => {})
  t.teardown(() => server.close())
  return port
}

async function refusedMetric(adminPort: number, reason: string): Promise<number> {
  const res = await request(`http://127.0.0.1:${adminPort}/metrics`)
  const text = await res.body.text()
  const line = text.split('\n').find((l) => l.startsWith('ka_proxy_connections_refused_total') && l.includes(`reason="${reason}"`))
  return line === undefined ? 0 : Number(line.split(' ').pop())
}

/** Opens `n` connections; resolves with how each ended (ECONNRESET for an RST). */
function flood(port: number, n: number): Promise<string[]> {
  return Promise.all(Array.from({ length: n }, () => new Promise<string>((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' })
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
    s.once('end', () => {
      resolve('end')
      s.destroy()
    })
    s.resume()
  })))
}

t.test('300 refusals at --max-connections: a line at once, one a second after, 300 counted', async (t) => {
  const adminPort = await freePort()
  const proxy = await startCliProxy(['--target', `127.0.0.1:${await holdingServer(t)}`, '--max-connections', '1', '--admin', `127.0.0.1:${adminPort}`])
  t.teardown(() => proxy.stop('SIGKILL'))
  const held = await connect(proxy.port)
  await proxy.line((l) => l.msg === 'session opened')
  const ends = await flood(proxy.port, 300)
  t.equal(ends.filter((e) => e === 'ECONNRESET').length, 300, 'each refused with an RST')
  await sleep(1300)
  const lines = proxy.logs.filter((l) => l.reason === 'max_connections' && String(l.msg).startsWith('connection refused'))
  t.ok(lines.length >= 1 && lines.length <= 3, `${lines.length} log lines for 300 refusals`)
  t.equal(lines.reduce((n, l) => n + Number(l.count), 0), 300, 'their counts add up')
  t.match(lines[0], { level: 40, count: 1, maxConnections: 1, client: /^127\.0\.0\.1:\d+$/ })
  t.equal(await refusedMetric(adminPort, 'max_connections'), 300)
  held.destroy()
})

t.test('at the descriptor limit: refusals are logged and counted as the proxy\'s own limit', async (t) => {
  const adminPort = await freePort()
  const targetPort = await holdingServer(t)
  const proxy = await startCliProxy(['--target', `127.0.0.1:${targetPort}`, '--admin', `127.0.0.1:${adminPort}`, '--log-level', 'info'])
  t.teardown(() => proxy.stop('SIGKILL'))
  await proxy.line((l) => l.msg === 'admin listening')
  limitDescriptors(proxy.proc.pid!, 40)
  const clients: Socket[] = []
  t.teardown(() => clients.forEach((c) => c.destroy()))
  // Each session takes two descriptors: far more clients than the limit allows.
  for (let i = 0; i < 60; i++) {
    const c = net.connect({ port: proxy.port, host: '127.0.0.1' })
    c.on('error', () => {})
    clients.push(c)
  }
  const line = await proxy.line((l) => l.reason === 'descriptor_limit', 10_000)
  t.match(line, { level: 40, msg: /^connection refused: the proxy is out of file descriptors/ })
  // The admin API needs a descriptor too: free some first.
  for (const c of clients.splice(0, 30)) c.destroy()
  let counted = 0
  t.ok(await waitFor(async () => (counted = await refusedMetric(adminPort, 'descriptor_limit').catch(() => 0)) > 0, 5000), `${counted} counted`)
})

t.test('out of descriptors at accept (EMFILE): counted, logged, and the waiting client is served once some are free', async (t) => {
  const { server, port: targetPort } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const proxy = await startCliProxy(['--target', `127.0.0.1:${targetPort}`, '--log-level', 'info'])
  t.teardown(() => proxy.stop('SIGKILL'))
  const freeSome = exhaustDescriptors(proxy.proc.pid!)
  // The kernel completes the handshake: the client waits in the backlog for an accept.
  const client = await connect(proxy.port)
  client.on('error', () => {})
  t.teardown(() => client.destroy())
  const line = await proxy.line((l) => l.reason === 'descriptor_limit', 10_000)
  t.match(line, { level: 40, error: 'EMFILE', msg: /^connection refused: the proxy is out of file descriptors/ })
  await sleep(300)
  t.equal(proxy.proc.exitCode, null, 'the proxy goes on')
  freeSome()
  const echoed = new Promise<string>((resolve) => client.once('data', (d: Buffer) => resolve(d.toString())))
  client.write('served after all')
  t.equal(await echoed, 'served after all', 'accepted and relayed once descriptors are free')
})
