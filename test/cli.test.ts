// The command as a user runs it: bad input is one line naming the flag with exit code 2,
// an address in use has its own code, signals stop it cleanly, logs are one line a session.

import t from 'tap'
import { connect, endOf, listen, readAll } from './helpers/net.ts'
import { runCli, startCliProxy } from './helpers/cli.ts'

const TARGET = ['--target', '127.0.0.1:5432']

const BAD_INPUT: Array<[string, string[], RegExp]> = [
  ['missing --target', ['--listen', '15432'], /^ka-proxy: --target: is required/],
  ['missing --listen', ['--target', '127.0.0.1:5432'], /^ka-proxy: --listen: is required/],
  ['bad listen port', ['--listen', '99999', ...TARGET], /^ka-proxy: --listen: port must be a number from 0 to 65535 \(got 99999\)/],
  ['listen port not a number', ['--listen', 'abc', ...TARGET], /^ka-proxy: --listen: port must be a number/],
  ['target without port', ['--listen', '15432', '--target', 'db'], /^ka-proxy: --target: expected host:port/],
  ['target port 0', ['--listen', '15432', '--target', 'db:0'], /^ka-proxy: --target: port must be a number from 1 to 65535/],
  ['IPv6 without brackets', ['--listen', '::1:15432', ...TARGET], /^ka-proxy: --listen: write an IPv6 address in brackets/],
  ['--idle 0', ['--listen', '15432', ...TARGET, '--idle', '0'], /^ka-proxy: --idle: must be a whole number from 1 to 32767 \(got 0\)/],
  ['--idle 40000', ['--listen', '15432', ...TARGET, '--idle', '40000'], /^ka-proxy: --idle: must be a whole number from 1 to 32767/],
  ['--idle not a number', ['--listen', '15432', ...TARGET, '--idle', 'soon'], /^ka-proxy: --idle: must be a number/],
  ['--interval 0', ['--listen', '15432', ...TARGET, '--interval', '0'], /^ka-proxy: --interval: must be a whole number from 1 to 32767/],
  ['--count 200', ['--listen', '15432', ...TARGET, '--count', '200'], /^ka-proxy: --count: must be a whole number from 1 to 127 \(got 200\)/],
  ['--target-count 0', ['--listen', '15432', ...TARGET, '--target-count', '0'], /^ka-proxy: --target-count: must be a whole number from 1 to 127/],
  ['--client-idle 2.5', ['--listen', '15432', ...TARGET, '--client-idle', '2.5'], /^ka-proxy: --client-idle: must be a whole number/],
  ['--user-timeout -1', ['--listen', '15432', ...TARGET, '--user-timeout', '-1'], /^ka-proxy: --user-timeout: must be from 0 \(off\)/],
  ['--connect-timeout 0', ['--listen', '15432', ...TARGET, '--connect-timeout', '0'], /^ka-proxy: --connect-timeout: must be a number of seconds/],
  ['flag without value', ['--listen', '15432', ...TARGET, '--idle'], /^ka-proxy: --idle: needs a value/],
  ['unknown flag', ['--listen', '15432', ...TARGET, '--idel', '5'], /^ka-proxy: --idel: unknown option/],
  ['unknown command', ['frobnicate'], /^ka-proxy: frobnicate: unknown command/],
  ['bad log level', ['--listen', '15432', ...TARGET, '--log-level', 'loud'], /^ka-proxy: --log-level: must be one of/],
]

t.test('bad input: one line naming the flag, exit code 2, no stack trace', async (t) => {
  for (const [name, args, message] of BAD_INPUT) {
    const r = runCli(args)
    t.equal(r.status, 2, `${name}: exit code 2`)
    t.match(r.stderr, message, `${name}: message`)
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: exactly one line`)
    t.notMatch(r.stderr, /\n\s+at /, `${name}: no stack trace`)
    t.equal(r.stdout, '', `${name}: nothing on stdout`)
  }
})

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
  t.match(d.stdout, /read back with getsockopt: idle 60 s, interval 10 s × 6 \(dead after 120 s, user timeout 120 s\), SO_KEEPALIVE on\nok\n$/)
})

t.test('relays, logs one JSON line per session, stops on SIGTERM with exit 0', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`, '--idle', '5', '--interval', '2', '--count', '3'])
  t.teardown(() => proxy.stop('SIGKILL'))
  const listening = proxy.logs.find((l) => l.msg === 'listening')!
  t.match(listening, {
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
  // A live session at SIGTERM gets the grace period, then a FIN, and the process exits 0.
  const client = await connect(proxy.port)
  await proxy.line((l) => l.msg === 'session opened' && l.session === 4)
  const clientEnd = endOf(client)
  proxy.proc.kill('SIGTERM')
  await proxy.line((l) => l.msg === 'shutting down')
  client.end()
  t.equal(await clientEnd, 'end')
  t.equal(await proxy.exited, 0, 'exit code 0')
  t.ok(proxy.logs.some((l) => l.msg === 'stopped'))
})

t.test('SIGINT after the grace period closes remaining sessions with reason shutdown', async (t) => {
  const { server, port } = await listen(() => {})
  t.teardown(() => server.close())
  const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`, '--shutdown-grace', '0.3'])
  t.teardown(() => proxy.stop('SIGKILL'))
  const client = await connect(proxy.port)
  await proxy.line((l) => l.msg === 'session opened')
  const clientEnd = endOf(client)
  proxy.proc.kill('SIGINT')
  t.equal(await clientEnd, 'end')
  const line = await proxy.line((l) => l.msg === 'session closed')
  t.match(line, { reason: 'shutdown' })
  t.equal(await proxy.exited, 0)
})

t.test('--no-native runs on the fallback and says so once', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`, '--no-native', '--idle', '7'])
  t.teardown(() => proxy.stop('SIGKILL'))
  const warnings = proxy.logs.filter((l) => l.level === 40)
  t.equal(warnings.length, 1)
  t.match(warnings[0]!.msg, /NOT in use \(disabled by --no-native\); falling back to setKeepAlive: interval 1 s, count 10, no TCP_USER_TIMEOUT/)
  t.match(proxy.logs.find((l) => l.msg === 'listening'), { clientKeepalive: { idle: 7, interval: 1, count: 10, userTimeout: 0, native: false } })
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
