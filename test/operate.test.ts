// Operating ka-proxy: config files with several routes, profiles, KA_PROXY_* variables,
// --max-connections, the admin API (/metrics, /healthz, /sessions, status), and SIGHUP.

import t, { type Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { connect, echo, echoServer, endOf, freePort, listen, readAll, sleep, waitFor } from './helpers/net.ts'
import { runCli, spawnProxy, type RunningProxy } from './helpers/cli.ts'
import type { LogLine } from './helpers/proxy.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'

const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-operate-'))
const writeConfig = (name: string, text: string): string => {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}


async function started(t: Test, args: string[], routes: number, env: NodeJS.ProcessEnv = {}): Promise<RunningProxy> {
  const proxy = spawnProxy(args, env)
  t.teardown(() => proxy.stop('SIGKILL'))
  await waitFor(() => proxy.logs.filter((l) => l.msg === 'listening').length === routes, 10_000)
  return proxy
}

const listening = (proxy: RunningProxy, route: string): LogLine => proxy.logs.find((l) => l.msg === 'listening' && l.route === route)!
const portOf = (line: LogLine): number => Number(String(line.address).split(':').pop())

async function get(url: string, token?: string): Promise<{ status: number; text: string }> {
  const res = await request(url, { headers: token ? { authorization: `Bearer ${token}` } : {} })
  return { status: res.statusCode, text: await res.body.text() }
}

t.test('bad configs are refused before anything starts: one line with the path, exit 2', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['range', 'routes:\n  - {listen: 0, target: "a:1", targetKeepalive: {idle: 0}}\n', /routes\[0\]\.targetKeepalive\.idle: must be at least 1 \(got 0\)/],
    ['typo', 'routes:\n  - {listen: 0, target: "a:1"}\n  - {listen: 0, target: "b:1", keepalve: {}}\n', /routes\[1\]\.keepalve: unknown key/],
    ['target syntax', 'routes:\n  - {listen: 0, target: "nohostport"}\n', /routes\[0\]\.target: expected host:port/],
    ['heartbeat', 'routes:\n  - {listen: 0, target: "a:1", heartbeat: {type: pg, fall: 0}}\n', /routes\[0\]\.heartbeat\.fall/],
    ['duplicate names', 'routes:\n  - {name: db, listen: 0, target: "a:1"}\n  - {name: db, listen: 0, target: "b:1"}\n', /routes\[1\]\.name: "db" names two routes/],
    ['admin without token', 'admin: 0.0.0.0:9480\nroutes:\n  - {listen: 0, target: "a:1"}\n', /admin: 0\.0\.0\.0:9480 is not a loopback address: set a token/],
  ]
  for (const [name, text, message] of cases) {
    const r = runCli(['--config', writeConfig(`bad-${name.replace(/\W/g, '')}.yaml`, text)])
    t.equal(r.status, 2, `${name}: exit 2`)
    t.match(r.stderr, message, `${name}: names the path`)
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`)
  }
  const multi = writeConfig('multi.yaml', 'routes:\n  - {listen: 0, target: "a:1"}\n  - {listen: 0, target: "b:1"}\n')
  const override = runCli(['--config', multi, '--idle', '5'])
  t.equal(override.status, 2)
  t.match(override.stderr, /^ka-proxy: --idle: overrides a single route only; .* has 2 routes/)
  const unknownProfile = runCli(['--listen', '0', '--target', 'a:1', '--profile', 'fast'])
  t.equal(unknownProfile.status, 2)
  t.match(unknownProfile.stderr, /^ka-proxy: --profile: must be one of kernel, database, aggressive-nat, ssh, satellite/)
})

t.test('profiles: listed with their detection time, and applied per leg', async (t) => {
  const list = runCli(['profiles'])
  t.equal(list.status, 0)
  t.match(list.stdout, /^database\s+300\s+30\s+5\s+450 s/m)
  const port = await echoServer(t)
  const proxy = await started(t, ['--listen', '127.0.0.1:0', '--target', `127.0.0.1:${port}`, '--profile', 'kernel', '--target-profile', 'aggressive-nat', '--client-count', '3'], 1)
  t.match(proxy.logs.find((l) => l.msg === 'listening'), {
    clientKeepalive: { idle: 7200, interval: 75, count: 3, userTimeout: 7425 },
    targetKeepalive: { idle: 60, interval: 10, count: 6, userTimeout: 120 },
  })
})

t.test('KA_PROXY_* variables stand in for flags; flags win', async (t) => {
  const port = await echoServer(t)
  const proxy = await started(t, ['--idle', '9'], 1, { KA_PROXY_LISTEN: '127.0.0.1:0', KA_PROXY_TARGET: `127.0.0.1:${port}`, KA_PROXY_IDLE: '5', KA_PROXY_COUNT: '4' })
  t.match(proxy.logs.find((l) => l.msg === 'listening'), { clientKeepalive: { idle: 9, count: 4 } })
  t.equal(await echo(portOf(proxy.logs.find((l) => l.msg === 'listening')!), 'env'), 'env')
})

t.test('two routes in one process, admin API, max connections, status', async (t) => {
  const echoPort = await echoServer(t)
  const adminPort = await freePort()
  const config = writeConfig('two.yaml', [
    `admin: 127.0.0.1:${adminPort}`,
    'routes:',
    '  - name: alpha',
    '    listen: 127.0.0.1:0',
    `    target: 127.0.0.1:${echoPort}`,
    '    keepalive: { idle: 30, interval: 5, count: 3 }',
    '  - name: beta',
    '    listen: 127.0.0.1:0',
    `    target: 127.0.0.1:${echoPort}`,
    '    keepalive: { profile: database }',
    '    maxConnections: 1',
    '',
  ].join('\n'))
  const proxy = await started(t, ['--config', config], 2)
  const alpha = portOf(listening(proxy, 'alpha'))
  const beta = portOf(listening(proxy, 'beta'))
  t.match(listening(proxy, 'beta'), { clientKeepalive: { idle: 300, interval: 30, count: 5 } }, 'the profile is in force')
  await proxy.line((l) => l.msg === 'admin listening')

  // Traffic with known byte counts.
  t.equal(await echo(alpha, 'hello'), 'hello')
  t.equal(await echo(alpha, 'world!'), 'world!')
  const held = await connect(beta)
  held.write('x')
  await new Promise((r) => held.once('data', r))
  // The reset may come before or after the client sees its connect complete.
  const refused = (await import('node:net')).connect(beta, '127.0.0.1')
  t.equal(await endOf(refused), 'ECONNRESET', 'beyond maxConnections: reset at once')
  await proxy.line((l) => l.msg === 'connection refused: max connections reached' && l.route === 'beta')

  const base = `http://127.0.0.1:${adminPort}`
  const metrics = (await get(`${base}/metrics`)).text
  const value = (name: string): number => Number(new RegExp(`^${name.replace(/[{}]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(metrics)?.[1])
  t.equal(value('ka_proxy_sessions_total{route="alpha"}'), 2)
  t.equal(value('ka_proxy_sessions_closed_total{route="alpha",reason="client_end",leg="client"}'), 2)
  t.equal(value('ka_proxy_bytes_total{route="alpha",direction="to_target"}'), 11)
  t.equal(value('ka_proxy_bytes_total{route="alpha",direction="to_client"}'), 11)
  t.equal(value('ka_proxy_sessions_active{route="beta"}'), 1)
  t.equal(value('ka_proxy_bytes_total{route="beta",direction="to_target"}'), 1, 'open sessions count too')
  t.equal(value('ka_proxy_connections_refused_total{route="beta",reason="max_connections"}'), 1)
  t.equal(value('ka_proxy_connect_seconds_count{route="alpha"}'), 2)
  t.equal(value(`ka_proxy_target_up{route="alpha",target="127.0.0.1:${echoPort}"}`), 1)

  const health = await get(`${base}/healthz`)
  t.equal(health.status, 200)
  t.match(JSON.parse(health.text), { status: 'ok', routes: [{ route: 'alpha', listening: true, targetsUp: 1 }, { route: 'beta' }] })

  const sessions = JSON.parse((await get(`${base}/sessions`)).text) as { sessions: Array<Record<string, any>> }
  t.equal(sessions.sessions.length, 1)
  t.match(sessions.sessions[0], {
    route: 'beta',
    bytesToTarget: 1,
    legs: {
      client: { keepalive: { enabled: true, idle: 300, interval: 30, count: 5, userTimeout: 450 }, probes: 0 },
      target: { keepalive: { enabled: true, idle: 300, interval: 30, count: 5, userTimeout: 450 }, probes: 0 },
    },
  })
  t.type(sessions.sessions[0]!.legs.target.rttUs, 'number')

  const status = runCli(['status', '--admin', `127.0.0.1:${adminPort}`])
  t.equal(status.status, 0)
  t.match(status.stdout, /^health: ok\n/)
  t.match(status.stdout, /^beta\s+yes\s+1\/1$/m)
  t.match(status.stdout, /1 open session\n/)
  t.match(status.stdout, /300\/30\/5 ut 450/)
  held.destroy()
})

t.test('admin token: required when set, refused when wrong', async (t) => {
  const echoPort = await echoServer(t)
  const adminPort = await freePort()
  const token = 'correct-horse-battery-staple'
  const proxy = await started(t, ['--listen', '127.0.0.1:0', '--target', `127.0.0.1:${echoPort}`, '--admin', `127.0.0.1:${adminPort}`, '--admin-token', token], 1)
  await proxy.line((l) => l.msg === 'admin listening')
  t.equal((await get(`http://127.0.0.1:${adminPort}/healthz`)).status, 401)
  t.equal((await get(`http://127.0.0.1:${adminPort}/healthz`, 'wrong-token-wrong-token')).status, 401)
  t.equal((await get(`http://127.0.0.1:${adminPort}/healthz`, token)).status, 200)
  const noToken = runCli(['status', '--admin', `127.0.0.1:${adminPort}`])
  t.not(noToken.status, 0)
  t.match(noToken.stderr, /refused the token/)
  t.equal(runCli(['status', '--admin', `127.0.0.1:${adminPort}`, '--admin-token', token]).status, 0)
  const open = runCli(['--listen', '0', '--target', 'a:1', '--admin', '0.0.0.0:0'])
  t.equal(open.status, 2)
  t.match(open.stderr, /^ka-proxy: --admin: 0\.0\.0\.0:0 is not a loopback address/)
})

t.test('SIGHUP: re-tunes live sessions without dropping them, starts and drains routes, rejects bad configs', async (t) => {
  const echoPort = await echoServer(t)
  const adminPort = await freePort()
  const route = (name: string, idle: number): string =>
    `  - name: ${name}\n    listen: 127.0.0.1:0\n    target: 127.0.0.1:${echoPort}\n    keepalive: { idle: ${idle}, interval: 5, count: 3 }\n`
  const path = writeConfig('reload.yaml', `admin: 127.0.0.1:${adminPort}\nroutes:\n${route('keep', 30)}${route('gone', 30)}`)
  const proxy = await started(t, ['--config', path], 2)
  const keepPort = portOf(listening(proxy, 'keep'))
  const gonePort = portOf(listening(proxy, 'gone'))
  const live = await connect(keepPort)
  const onGone = await connect(gonePort)
  for (const s of [live, onGone]) {
    s.write('a')
    await new Promise((r) => s.once('data', r))
  }

  writeFileSync(path, `admin: 127.0.0.1:${adminPort}\nroutes:\n${route('keep', 45)}${route('new', 20)}`)
  proxy.proc.kill('SIGHUP')
  const reloaded = await proxy.line((l) => l.msg === 'config reloaded')
  t.same([reloaded.started, reloaded.removed, reloaded.retuned], [['new'], ['gone'], ['keep']])
  t.match(proxy.logs.find((l) => l.msg === 'route re-tuned'), { route: 'keep', sessions: 1, readBack: { legs: 2, matching: 2 } })
  const { sessions } = JSON.parse((await get(`http://127.0.0.1:${adminPort}/sessions`)).text) as { sessions: Array<Record<string, any>> }
  const kept = sessions.find((s) => s.route === 'keep')!
  t.match(kept.legs, { client: { keepalive: { idle: 45, userTimeout: 60 } }, target: { keepalive: { idle: 45, userTimeout: 60 } } }, 'the live session has the new idle on both legs')
  live.write('b')
  t.equal(String(((await new Promise((r) => live.once('data', r))) as Buffer)), 'b', 'and still relays')
  onGone.write('c')
  t.equal(String(((await new Promise((r) => onGone.once('data', r))) as Buffer)), 'c', 'a removed route drains: its session still relays')
  await t.rejects(connect(gonePort), { code: 'ECONNREFUSED' }, 'but it accepts no one new')
  t.equal(await echo(portOf(listening(proxy, 'new')), 'fresh'), 'fresh', 'the new route relays')

  writeFileSync(path, 'routes:\n  - {listen: 0, target: nope}\n')
  proxy.proc.kill('SIGHUP')
  const rejected = await proxy.line((l) => l.msg === 'config reload rejected: keeping the running config')
  t.match(rejected.error, /routes\[0\]\.target: expected host:port/)
  live.write('d')
  t.equal(String(((await new Promise((r) => live.once('data', r))) as Buffer)), 'd', 'the old config stays in force')
  live.destroy()
  onGone.destroy()
  await sleep(100)
})

t.test('/sessions shows keepalive probes going unanswered on an idle session', async (t) => {
  const { execFileSync, spawnSync } = await import('node:child_process')
  const skip = missingPrerequisite((process.getuid?.() !== 0 || spawnSync('nft', ['--version']).status !== 0) &&
    'needs root and the nft command (apt-get install nftables) to drop the target\'s replies on loopback')
  if (skip) {
    t.plan(0, skip)
    return
  }
  const echoPort = await echoServer(t)
  const adminPort = await freePort()
  const proxy = await started(t, ['--listen', '127.0.0.1:0', '--target', `127.0.0.1:${echoPort}`, '--target-idle', '1', '--target-interval', '1', '--target-count', '20', '--admin', `127.0.0.1:${adminPort}`], 1)
  const client = await connect(portOf(proxy.logs.find((l) => l.msg === 'listening')!))
  t.teardown(() => client.destroy())
  client.write('a')
  await new Promise((r) => client.once('data', r))
  // Drop everything the target sends on loopback: the proxy's probes go unanswered.
  const table = `ka_proxy_test_${process.pid}`
  const nft = (...args: string[]): void => void execFileSync('nft', args)
  nft('add', 'table', 'inet', table)
  t.teardown(() => nft('delete', 'table', 'inet', table))
  nft('add', 'chain', 'inet', table, 'in', '{ type filter hook input priority -10 ; }')
  nft('add', 'rule', 'inet', table, 'in', 'tcp', 'sport', String(echoPort), 'drop')
  const probes = async (): Promise<number> => {
    const { sessions } = JSON.parse((await get(`http://127.0.0.1:${adminPort}/sessions`)).text) as { sessions: Array<Record<string, any>> }
    return sessions[0]!.legs.target.probes as number
  }
  await sleep(2500)
  const first = await probes()
  await sleep(2000)
  const second = await probes()
  t.ok(first >= 1, `probes sent and unanswered after 2.5 s idle (${first})`)
  t.ok(second >= first + 1, `and increasing (${first} -> ${second})`)
})

t.test('other KA_PROXY_* variables are not taken for flags', async (t) => {
  const r = runCli(['--version'], { KA_PROXY_DEBUG: '1', KA_PROXY_SOMETHING_ELSE: 'x' })
  t.equal(r.status, 0)
  t.equal(r.stderr, '')
})

t.test('an admin address already in use: exit 3, naming --admin', async (t) => {
  const { server, port } = await listen(() => {})
  t.teardown(() => server.close())
  const r = runCli(['--listen', '127.0.0.1:0', '--target', '127.0.0.1:1', '--admin', `127.0.0.1:${port}`])
  t.equal(r.status, 3)
  t.equal(r.stderr, `ka-proxy: --admin: address 127.0.0.1:${port} is already in use\n`)
})
