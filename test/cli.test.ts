// The command as a user runs it (bad input on the command line is in cli-input.test.ts):
// an address in use has its own code, signals stop it cleanly, logs are one line a session.

import t from 'tap'
import { connect, endOf, listen, readAll } from './helpers/net.ts'
import { runCli, spawnProxy, startCliProxy } from './helpers/cli.ts'

const TARGET = ['--target', '127.0.0.1:5432']

t.test('listen address in use: its own exit code (3) and one line', async (t) => {
  const { server, port } = await listen(() => {})
  t.teardown(() => server.close())
  const r = runCli(['--listen', `127.0.0.1:${port}`, ...TARGET])
  t.equal(r.status, 3)
  t.match(r.stderr, new RegExp(`^ka-proxy: --listen: address 127\\.0\\.0\\.1:${port} is already in use\\n$`))
})

t.test('--version and doctor say whether the native helper is in use', async (t) => {
  const v = runCli(['--version'])
  t.equal(v.status, 0)
  t.match(v.stdout, /^ka-proxy \d+\.\d+\.\d+\nnative socket helper: in use/)
  const off = runCli(['--version'], { KA_PROXY_NATIVE: '0' })
  t.match(off.stdout, /native socket helper: NOT in use \(disabled by KA_PROXY_NATIVE=0\); falling back to setKeepAlive: interval 1 s, count 10/)
  const d = runCli(['doctor'])
  t.equal(d.status, 0, 'doctor passes on this machine')
  t.match(d.stdout, /read back with getsockopt: idle 60 s, interval 10 s × 6 \(dead after 120 s, user timeout 120 s\), SO_KEEPALIVE on\nalso read back: TCP_NODELAY on, SO_OOBINLINE on\nok\n$/)
})

t.test('relays, logs one JSON line per session, stops on SIGTERM with exit 0', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`, '--idle', '5', '--interval', '2', '--count', '3'])
  t.teardown(() => proxy.stop('SIGKILL'))
  const listening = proxy.logs.find((l) => l.msg === 'listening')!
  t.match(listening, {
    native: true,
    relay: 'native',
    clientKeepalive: { idle: 5, interval: 2, count: 3, userTimeout: 11, native: true },
    targetKeepalive: { idle: 5, interval: 2, count: 3, userTimeout: 11, native: true },
    inherited: true,
  })
  for (let i = 0; i < 3; i++) {
    const client = await connect(proxy.port)
    const echoed = readAll(client)
    client.end(`ping ${i}`)
    t.equal((await echoed).toString(), `ping ${i}`)
  }
  await proxy.line((l) => l.msg === 'session closed' && l.session === 3)
  const closed = proxy.logs.filter((l) => l.msg === 'session closed')
  t.equal(closed.length, 3, 'exactly one line per session')
  for (const line of closed) {
    t.match(line, { reason: 'client_end', leg: 'client', bytesToTarget: 6, bytesToClient: 6, client: /^127\.0\.0\.1:\d+$/, target: `127.0.0.1:${port}` })
    t.type(line.durationMs, 'number')
  }
  t.equal(await proxy.stop('SIGTERM'), 0, 'exit code 0')
  t.ok(proxy.logs.some((l) => l.msg === 'stopped'))
})

// The grace is timed from the signal to the FIN both peers get; neither peer ends the idle
// session itself. A session that ends by itself during the grace is not cut, and the process
// then stops without waiting out the rest of it.
const GRACE_MS = 800
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`${signal}: idle sessions get --shutdown-grace, then a FIN to both peers; exit 0`, async (t) => {
    const targets: import('node:net').Socket[] = []
    const { server, port } = await listen((s) => {
      targets.push(s)
      s.on('data', (c: Buffer) => s.write(c))
    })
    t.teardown(() => server.close())
    const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`, '--shutdown-grace', String(GRACE_MS / 1000)])
    t.teardown(() => proxy.stop('SIGKILL'))
    const idle = await connect(proxy.port)
    const finishing = await connect(proxy.port)
    for (const c of [idle, finishing]) {
      c.write('x')
      await new Promise((r) => c.once('data', r))
    }
    const [idleTarget] = targets
    const signalledAt = Date.now()
    const ends = [endOf(idle), endOf(idleTarget!)].map((p) => p.then((how) => ({ how, ms: Date.now() - signalledAt })))
    proxy.proc.kill(signal)
    await proxy.line((l) => l.msg === 'shutting down')
    // The other session finishes by itself during the grace: a normal end, not a cut.
    const finished = readAll(finishing)
    finishing.end()
    await finished
    t.match(await proxy.line((l) => l.msg === 'session closed' && l.session === 2), { reason: 'client_end' }, 'a session ending during the grace ends normally')
    const [client, target] = await Promise.all(ends)
    t.equal(client!.how, 'end', 'the idle client gets a FIN')
    t.equal(target!.how, 'end', 'its target gets a FIN')
    for (const [who, end] of [['client', client!], ['target', target!]] as const) {
      t.ok(end.ms >= GRACE_MS - 20 && end.ms <= GRACE_MS + 500, `${who}: FIN ${end.ms} ms after ${signal} (grace ${GRACE_MS} ms, + at most 500 ms)`)
    }
    t.match(await proxy.line((l) => l.msg === 'session closed' && l.session === 1), { reason: 'shutdown', clientClose: 'fin', targetClose: 'fin' })
    t.equal(await proxy.exited, 0, 'exit code 0')
  })
}

t.test('SIGTERM with no session left to wait for: the process stops at once', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`, '--shutdown-grace', '30'])
  t.teardown(() => proxy.stop('SIGKILL'))
  const started = Date.now()
  t.equal(await proxy.stop('SIGTERM'), 0)
  t.ok(Date.now() - started < 3000, `stopped in ${Date.now() - started} ms, not after the 30 s grace`)
})

t.test('--no-native runs on the fallback and says so once', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`, '--no-native', '--idle', '7'])
  t.teardown(() => proxy.stop('SIGKILL'))
  const warnings = proxy.logs.filter((l) => l.level === 40)
  t.equal(warnings.length, 1)
  t.match(warnings[0]!.msg, /NOT in use \(disabled by --no-native\); falling back to setKeepAlive: interval 1 s, count 10, no TCP_USER_TIMEOUT/)
  t.match(proxy.logs.find((l) => l.msg === 'listening'), { native: false, relay: 'stream', clientKeepalive: { idle: 7, interval: 1, count: 10, userTimeout: 0, native: false } })
  const client = await connect(proxy.port)
  const echoed = readAll(client)
  client.end('fallback')
  t.equal((await echoed).toString(), 'fallback')
  t.equal(await proxy.stop(), 0)
})

t.test('IPv6 listen and target', async (t) => {
  const net = await import('node:net')
  const server = net.createServer((s) => s.pipe(s))
  await new Promise<void>((r) => server.listen(0, '::1', r))
  t.teardown(() => server.close())
  const port = (server.address() as import('node:net').AddressInfo).port
  // The last --listen wins: this one replaces the helper's IPv4 default.
  const proxy = await startCliProxy(['--target', `[::1]:${port}`, '--listen', '[::1]:0'])
  t.teardown(() => proxy.stop('SIGKILL'))
  t.match(proxy.logs.find((l) => l.msg === 'listening'), { address: /^\[::1\]:\d+$/ })
  const c = net.connect({ port: proxy.port, host: '::1', allowHalfOpen: true })
  const echoed = readAll(c)
  c.end('v6')
  t.equal((await echoed).toString(), 'v6')
  const line = await proxy.line((l) => l.msg === 'session closed')
  t.equal(line.target, `[::1]:${port}`)
})

t.test('KA_PROXY_RELAY=stream: native socket options, bytes through Node streams; the listening line says which', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`], { KA_PROXY_RELAY: 'stream' })
  t.teardown(() => proxy.stop('SIGKILL'))
  t.match(proxy.logs.find((l) => l.msg === 'listening'), { native: true, relay: 'stream', targetKeepalive: { native: true } })
  const client = await connect(proxy.port)
  const echoed = readAll(client)
  client.end('streams')
  t.equal((await echoed).toString(), 'streams')
})

t.test('KA_PROXY_RELAY: anything but native or stream, or native without the helper, is one line naming it', async (t) => {
  // Were the variable not checked, the proxy would start and run until the 20 s timeout.
  const bogus = runCli(['--listen', '127.0.0.1:0', '--target', '127.0.0.1:1'], { KA_PROXY_RELAY: 'pump' })
  t.equal(bogus.status, 2)
  t.equal(bogus.stderr, 'ka-proxy: KA_PROXY_RELAY: expected native or stream (got "pump")\n')
  const noHelper = runCli(['--no-native', '--listen', '127.0.0.1:0', '--target', '127.0.0.1:1'], { KA_PROXY_RELAY: 'native' })
  t.equal(noHelper.status, 2)
  t.match(noHelper.stderr, /^ka-proxy: KA_PROXY_RELAY: native needs the native helper, which is not in use \(.*--no-native.*\)\n$/)
})

// pino-pretty's form, one line per event: "[HH:MM:ss.l] INFO: message {fields}".
const PRETTY_LISTENING = /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: listening \{.*\}\r?$/m

t.test('--log-format pretty: readable lines, not JSON', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const proxy = spawnProxy(['--listen', '127.0.0.1:0', '--target', `127.0.0.1:${port}`, '--log-format', 'pretty'])
  t.teardown(() => proxy.stop('SIGKILL'))
  await proxy.line((l) => /INFO: listening \{/.test(l.msg))
  const text = proxy.logs.map((l) => l.msg).join('\n')
  t.match(text, PRETTY_LISTENING, 'the listening line with its time and level')
  t.match(text, /INFO: listening \{.*"relay":"native"/, 'its fields on the same line')
  t.ok(proxy.logs.every((l) => l.level === 0), 'no line is JSON')
  t.equal(await proxy.stop('SIGTERM'), 0)
})

t.test('on a terminal the logs are pretty without asking', async (t) => {
  // script(1) gives the command a pseudo-terminal as stdout; SIGINT after 8 s stops it.
  const { spawnSync } = await import('node:child_process')
  const { fileURLToPath } = await import('node:url')
  const main = fileURLToPath(new URL('../src/main.ts', import.meta.url))
  const command = `timeout --preserve-status -s INT 8 ${process.execPath} --import tsx ${main} --listen 127.0.0.1:0 --target 127.0.0.1:1`
  const r = spawnSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', timeout: 30_000 })
  t.equal(r.status, 0, 'stopped cleanly by SIGINT')
  t.match(r.stdout, PRETTY_LISTENING)
  t.notMatch(r.stdout, /^\{"level"/m, 'no JSON line')
})
