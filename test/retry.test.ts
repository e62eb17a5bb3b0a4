// A failed connect is retried on the next target, with or without heartbeats (HAProxy's
// retries + redispatch): `--target dead:1,live:2` serves every client. Failback to the
// first target is automatic or left to the operator (--failback auto|manual).

import t from 'tap'
import { PASSIVE_HOLD_MS } from '../src/targets.ts'
import { freePort, sleep } from './helpers/net.ts'
import { fullListener, namedTarget, server, whereTo } from './helpers/heartbeat.ts'
import { startProxy, type TestProxy } from './helpers/proxy.ts'

async function names(proxy: TestProxy, n: number): Promise<string[]> {
  const out: string[] = []
  for (let i = 0; i < n; i++) {
    const { socket, name } = await whereTo(proxy.port)
    out.push(name)
    socket.destroy()
  }
  return out
}

for (const native of [true, false]) {
  const mode = native ? 'native pump' : 'streams'

  t.test(`${mode}: a refused, an unresolvable and a silent target are skipped; every client is served`, async (t) => {
    const live = await namedTarget(t, 'LIVE')
    const refused = await freePort()
    const silent = await fullListener(t)
    const proxy = await startProxy({
      target: `127.0.0.1:${refused},no-such-host.invalid:5432,127.0.0.1:${silent},127.0.0.1:${live.port}`,
      connectTimeout: 0.3,
      native,
    })
    t.teardown(() => proxy.stop())
    t.same(await names(proxy, 4), ['LIVE', 'LIVE', 'LIVE', 'LIVE'], 'every client reaches the live target')
    const retries = proxy.logs.filter((l) => l.msg === 'connect failed: trying the next target')
    // The name may be known not to resolve before the first client comes (looked up at start): then it is skipped.
    t.same(retries.map((l) => l.error).filter((e) => e !== 'ENOTFOUND'), ['ECONNREFUSED', 'ETIMEDOUT'], 'the first client tried each in turn')
    t.match(retries.pop(), { target: `127.0.0.1:${silent}`, next: `127.0.0.1:${live.port}` })
    t.equal(proxy.listener.pool.targets[1]!.failure?.error, 'ENOTFOUND', 'the name is known not to resolve')
    const closed = await proxy.closed(4)
    for (const s of closed) t.match(s, { target: `127.0.0.1:${live.port}`, reason: 'client_end' })
    t.notOk('error' in closed[0]!, 'a connect that succeeded in the end is no error')
    t.match(proxy.logs.filter((l) => l.msg === 'failover: new connections go to the next target').pop(), { to: `127.0.0.1:${live.port}` })
  })
}

t.test('every target failing: the client is reset once all were tried, each at most once', async (t) => {
  const [a, b] = [await freePort(), await freePort()]
  const proxy = await startProxy({ target: `127.0.0.1:${a},127.0.0.1:${b}` })
  t.teardown(() => proxy.stop())
  const { name } = await whereTo(proxy.port)
  t.equal(name, 'ECONNRESET')
  const [s] = await proxy.closed(1)
  t.match(s, { reason: 'connect_failed', error: 'ECONNREFUSED', target: `127.0.0.1:${b}` })
  t.equal(proxy.logs.filter((l) => l.msg === 'connect failed: trying the next target').length, 1)
})

t.test('--failback manual (the default): new connections stay on the target in use until the operator fails back', async (t) => {
  const second = await namedTarget(t, 'SECOND')
  // A connect to the first fails once; it answers again afterwards.
  const dying = await server(t, (s) => s.write('FIRST\n'))
  const flip = await startProxy({ target: `127.0.0.1:${dying.port},127.0.0.1:${second.port}` })
  t.teardown(() => flip.stop())
  t.same(await names(flip, 1), ['FIRST'])
  const pool = flip.listener.pool
  pool.connectFailed(pool.targets[0]!, 'ECONNREFUSED')
  t.same(await names(flip, 1), ['SECOND'], 'failed over')
  await sleep(PASSIVE_HOLD_MS + 200)
  t.same(await names(flip, 2), ['SECOND', 'SECOND'], 'manual: no return although the first answers again')
  pool.failback()
  t.same(await names(flip, 1), ['FIRST'], 'after the failback (what POST /failback does)')
})

t.test('--failback auto: back to the first target once its connect failure is old news', async (t) => {
  const first = await namedTarget(t, 'FIRST')
  const second = await namedTarget(t, 'SECOND')
  const proxy = await startProxy({ target: `127.0.0.1:${first.port},127.0.0.1:${second.port}`, failback: 'auto' })
  t.teardown(() => proxy.stop())
  const pool = proxy.listener.pool
  pool.connectFailed(pool.targets[0]!, 'ECONNREFUSED')
  t.same(await names(proxy, 2), ['SECOND', 'SECOND'], 'avoided while its failure is fresh')
  await sleep(PASSIVE_HOLD_MS + 200)
  t.same(await names(proxy, 2), ['FIRST', 'FIRST'], 'then tried, and used, again')
})

t.test('/healthz without heartbeats: a target whose name does not resolve, or whose connect just failed, is not up', async (t) => {
  const { pino } = await import('pino')
  const { request } = await import('undici')
  const { ProxyApp } = await import('../src/app.ts')
  const { SocketControl } = await import('../src/socket-control.ts')
  const { resolveAppConfig } = await import('../src/config/resolve.ts')
  const live = await namedTarget(t, 'LIVE')
  const adminPort = await freePort()
  const app = new ProxyApp(new SocketControl(), pino({ level: 'silent' }))
  const config = (target: string) => resolveAppConfig({ listen: '127.0.0.1:0', target, admin: `127.0.0.1:${adminPort}` })
  await app.start(config(`no-such-host.invalid:5432,127.0.0.1:${live.port}`))
  t.teardown(() => app.stop(0))
  const health = async () => {
    const res = await request(`http://127.0.0.1:${adminPort}/healthz`)
    return { status: res.statusCode, body: (await res.body.json()) as { routes: Array<{ targetsUp: number; targets: number }> } }
  }
  const metric = async (target: string) => {
    const text = await (await request(`http://127.0.0.1:${adminPort}/metrics`)).body.text()
    return Number(new RegExp(`^ka_proxy_target_up\\{route="[^"]+",target="${target.replace(/[.[\]]/g, '\\$&')}"\\} (\\d)$`, 'm').exec(text)?.[1])
  }
  await sleep(1000) // the name is looked up at start
  t.match(await health(), { status: 200, body: { routes: [{ targetsUp: 1, targets: 2 }] } }, 'one of two up')
  t.equal(await metric('no-such-host.invalid:5432'), 0, 'target_up 0 for the name that does not resolve')
  t.equal(await metric(`127.0.0.1:${live.port}`), 1)
  await app.reload(config('no-such-host.invalid:5432'))
  await sleep(1000)
  t.match(await health(), { status: 503, body: { status: 'unavailable', routes: [{ targetsUp: 0, targets: 1 }] } }, 'its only target unresolvable: 503')
})

t.test('failback is asked for explicitly: a reload (SIGHUP, also sent by logrotate) keeps the target in use; POST /failback and `ka-proxy failback` return', async (t) => {
  const net = await import('node:net')
  const { execFile } = await import('node:child_process')
  const { fileURLToPath } = await import('node:url')
  const { pino } = await import('pino')
  const { request } = await import('undici')
  const { ProxyApp } = await import('../src/app.ts')
  const { SocketControl } = await import('../src/socket-control.ts')
  const { resolveAppConfig } = await import('../src/config/resolve.ts')
  const firstPort = await freePort()
  const second = await namedTarget(t, 'SECOND')
  const listenPort = await freePort()
  const adminPort = await freePort()
  const app = new ProxyApp(new SocketControl(), pino({ level: 'silent' }))
  const config = () => resolveAppConfig({ listen: `127.0.0.1:${listenPort}`, target: `127.0.0.1:${firstPort},127.0.0.1:${second.port}`, admin: `127.0.0.1:${adminPort}` })
  await app.start(config())
  t.teardown(() => app.stop(0))
  const to = async (): Promise<string> => {
    const { socket, name } = await whereTo(listenPort)
    socket.destroy()
    return name
  }
  const cli = (args: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const main = fileURLToPath(new URL('../src/main.ts', import.meta.url))
    execFile(process.execPath, ['--import', 'tsx', main, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? 1), stdout, stderr })
    })
  })
  t.equal(await to(), 'SECOND', 'the first refuses: failed over')
  const first = net.createServer((s) => s.end('FIRST\n'))
  await new Promise<void>((r) => first.listen(firstPort, '127.0.0.1', r))
  t.teardown(() => first.close())
  await sleep(PASSIVE_HOLD_MS + 200)
  t.equal(await to(), 'SECOND', 'the first answers again, new connections stay')
  await app.reload(config())
  t.equal(await to(), 'SECOND', 'a reload does not move them back')

  const get = await request(`http://127.0.0.1:${adminPort}/failback`)
  t.equal(get.statusCode, 405, 'GET /failback changes nothing')
  await get.body.dump()
  t.equal(await to(), 'SECOND')
  const unknown = await cli(['failback', '--admin', `127.0.0.1:${adminPort}`, '--route', 'nope'])
  t.equal(unknown.code, 2, 'an unknown route: exit 2')
  t.match(unknown.stderr, /^ka-proxy: --route: no route named "nope"\n$/)
  t.equal(await to(), 'SECOND')

  const done = await cli(['failback', '--admin', `127.0.0.1:${adminPort}`])
  t.equal(done.code, 0, done.stderr)
  t.equal(done.stdout, `127.0.0.1:${listenPort}: new connections go back to 127.0.0.1:${firstPort} (were going to 127.0.0.1:${second.port})\n`)
  t.equal(await to(), 'FIRST', 'after the failback: back to the first')
  const again = await request(`http://127.0.0.1:${adminPort}/failback`, { method: 'POST' })
  t.match(await again.body.json(), { routes: [{ route: `127.0.0.1:${listenPort}`, moved: false, to: `127.0.0.1:${firstPort}` }] }, 'a second failback has nothing to move')
})
