// What operators expect of a command-line tool, checked on the real command: messages in
// English whatever the locale, KA_PROXY_<FLAG> variables, the last of a repeated flag wins,
// shell completion, --version telling the truth, and client addresses logged as they are.

import t from 'tap'
import { connect, freePort, listen, readAll } from './helpers/net.ts'
import { runCli, startCliProxy } from './helpers/cli.ts'


t.test('messages stay English and one line whatever LANG says', async (t) => {
  // yargs picks its messages from LANG / LC_ALL: without .locale('en') these were German.
  const lang = 'de_DE.UTF-8'
  const r = runCli(['--bogus'], { LANG: lang, LC_ALL: lang, LC_MESSAGES: lang })
  t.equal(r.status, 2, 'exit 2')
  t.equal(r.stderr, 'ka-proxy: --bogus: unknown option (see ka-proxy --help)\n', 'the English line')
  const help = runCli(['--help'], { LANG: lang, LC_ALL: lang })
  t.match(help.stdout, /\nOptions:\n/, '--help in English')
  t.notMatch(help.stdout, /Optionen|Befehle|Zeige/)
})

t.test('KA_PROXY_<FLAG> for value flags only; other KA_PROXY_* variables are left alone', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  // Unrelated variables, a boolean flag's name and an empty value must neither fail strict parsing
  // nor switch anything on.
  const env = {
    KA_PROXY_TARGET: `127.0.0.1:${port}`,
    KA_PROXY_CONNECT_TIMEOUT: '3',
    KA_PROXY_IDLE: '',
    KA_PROXY_SOMETHING_ELSE: 'x',
    KA_PROXY_VERSION: '1',
    KA_PROXY_HELP: '1',
  }
  const proxy = await startCliProxy(['--count', '4'], env)
  t.teardown(() => proxy.stop('SIGKILL'))
  t.match(proxy.logs.find((l) => l.msg === 'listening'), { target: `127.0.0.1:${port}`, clientKeepalive: { idle: 60, count: 4 } })
  const c = await connect(proxy.port)
  const got = readAll(c)
  c.end('env')
  t.equal((await got).toString(), 'env')
  const bad = runCli(['--listen', '0'], { KA_PROXY_TARGET: 'nohostport' })
  t.equal(bad.status, 2)
  t.equal(bad.stderr, 'ka-proxy: --target: expected host:port (got "nohostport")\n', 'a bad variable names its flag')
})

t.test('a repeated flag: the last value wins', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const proxy = await startCliProxy(['--target', '127.0.0.1:1', '--target', `127.0.0.1:${port}`, '--idle', '5', '--idle', '7'])
  t.teardown(() => proxy.stop('SIGKILL'))
  t.match(proxy.logs.find((l) => l.msg === 'listening'), { target: `127.0.0.1:${port}`, clientKeepalive: { idle: 7 } })
})

t.test('shell completion', async (t) => {
  const script = runCli(['completion'])
  t.equal(script.status, 0)
  t.match(script.stdout, /###-begin-ka-proxy-completions-###/)
  t.match(script.stdout, /--get-yargs-completions/)
  const flags = runCli(['--get-yargs-completions', 'ka-proxy', '--heart'])
  t.equal(flags.status, 0)
  t.match(flags.stdout, /^--heartbeat-interval$/m)
  const commands = runCli(['--get-yargs-completions', 'ka-proxy', ''])
  t.match(commands.stdout, /^doctor$/m)
  t.match(commands.stdout, /^check$/m)
})

t.test('--version tells whether the native helper is in use, --no-native included', async (t) => {
  const on = runCli(['--version'])
  t.match(on.stdout, /\nnative socket helper: in use/)
  const off = runCli(['--no-native', '--version'])
  t.equal(off.status, 0)
  t.match(off.stdout, /\nnative socket helper: NOT in use \(disabled by --no-native\)/)
})

t.test('profiles print the detection time as the README does', async (t) => {
  const r = runCli(['profiles'])
  t.match(r.stdout, /^kernel\s+7200\s+75\s+9\s+7875 s \(2\.2 h\)/m)
})

t.test('status with a wrong token names the flag that sets it', async (t) => {
  const adminPort = await freePort()
  const proxy = await startCliProxy(['--target', '127.0.0.1:1', '--admin', `127.0.0.1:${adminPort}`, '--admin-token', 'correct-horse-battery-staple'])
  t.teardown(() => proxy.stop('SIGKILL'))
  await proxy.line((l) => l.msg === 'admin listening')
  const r = runCli(['status', '--admin', `127.0.0.1:${adminPort}`, '--admin-token', 'wrong-token-wrong-token'])
  t.equal(r.status, 1)
  t.equal(r.stderr, `ka-proxy: --admin-token: the admin API at http://127.0.0.1:${adminPort} refused the token\n`)
})

t.test('bench refuses a bad flag with one line naming it; the open rate is measured after warm-up rounds', async (t) => {
  const { spawnSync } = await import('node:child_process')
  for (const value of ['-1', '1.5']) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/perf.ts', '--warm-rounds', value], { encoding: 'utf8', timeout: 30_000 })
    t.equal(r.status, 2, `--warm-rounds ${value}`)
    t.equal(r.stderr, `bench: --warm-rounds must be a whole number, 0 or more (got ${value})\n`)
  }
  const { parseOptions } = await import('../bench/perf/options.ts')
  t.equal(parseOptions([]).warmRounds, 3)
  t.equal(parseOptions(['--quick']).warmRounds, 0, 'a smoke run measures the round after the first')
  t.equal(parseOptions(['--quick', '--warm-rounds', '2']).warmRounds, 2, '--quick never overrides a value given')
})

t.test('bench:survival refuses keepalive times the NAT timeout makes meaningless', async (t) => {
  const { spawnSync } = await import('node:child_process')
  // --scenarios bogus: should the check be missing, the run still stops before the lab starts.
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/survival.ts', '-T', '5', '--scenarios', 'bogus'], { encoding: 'utf8', timeout: 30_000 })
  t.equal(r.status, 1)
  t.equal(r.stderr, 'bench:survival: --idle (5 s) must be below --nat-timeout (5 s): the NAT would forget every flow before its next keepalive probe\n')
})
