// Every metric of the README's table driven away from its default by a real fault, and read
// back from /metrics: a refused target and a silent one (connect failures), a target whose
// heartbeat fails (target_up 0, clients refused: no healthy target), a heartbeat URL turning
// 503 under a live session (target_down), maxConnections, a reset, and a target whose packets
// are dropped by nftables until its keepalive gives up (a keepalive death; root and nft).

import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { spawnProxy } from './helpers/cli.ts'
import { fullListener, healthEndpoint } from './helpers/heartbeat.ts'
import { connect, endOf, freePort, listen, waitFor } from './helpers/net.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'

const noNft = missingPrerequisite((process.getuid?.() !== 0 || spawnSync('nft', ['--version']).status !== 0) &&
  'needs root and the nft command (apt-get install nftables) to drop a target\'s packets on loopback')

/** The value of one sample in Prometheus text, or undefined when it is not there. */
function sample(text: string, name: string, labels: Record<string, string | number> = {}): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const have = (m[2] ?? '').split(',').filter(Boolean)
    if (wanted.every((w) => have.includes(w)) && have.length === wanted.length) return Number(m[3])
  }
  return undefined
}

t.test('every metric of the README moves on a real fault', async (t) => {
  // Peers: an echo target (its packets dropped later), a refusing port, a silent listener,
  // and a health URL answering per target port.
  const echo = await listen((s) => {
    s.on('error', () => {})
    s.pipe(s)
  })
  t.teardown(() => echo.server.close())
  const refusing = await freePort()
  const silent = await fullListener(t)
  const { port: webPort, status: healthStatus } = await healthEndpoint(t)
  const flaky = await listen((s) => {
    s.on('error', () => {})
    s.pipe(s)
  })
  t.teardown(() => flaky.server.close())

  const adminPort = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-metrics-'))
  const config = join(dir, 'metrics.yaml')
  const route = (name: string, target: string, extra = ''): string => `  - name: ${name}\n    listen: 127.0.0.1:0\n    target: ${target}\n${extra}`
  writeFileSync(config, [
    `admin: 127.0.0.1:${adminPort}`,
    'routes:',
    route('echo', `127.0.0.1:${echo.port}`, '    targetKeepalive: { idle: 1, interval: 1, count: 2 }\n    maxConnections: 2\n'),
    route('refused', `127.0.0.1:${refusing}`),
    route('silent', `127.0.0.1:${silent}`, '    connectTimeout: 0.3\n'),
    route('dead', `127.0.0.1:${refusing}`, '    heartbeat: { type: tcp, interval: 0.2, timeout: 0.2, fall: 1, rise: 1 }\n'),
    route('flaky', `127.0.0.1:${flaky.port}`, `    heartbeat: { type: "http://127.0.0.1:${webPort}/{port}", interval: 0.2, timeout: 0.2, fall: 1, rise: 1 }\n`),
  ].join('\n'))
  const proxy = spawnProxy(['--config', config])
  t.teardown(() => proxy.stop('SIGKILL'))
  await proxy.line((l) => l.msg === 'admin listening')
  const port = (name: string): number => Number(String(proxy.logs.find((l) => l.msg === 'listening' && l.route === name)!.address).split(':').pop())
  const metrics = async (): Promise<string> => (await request(`http://127.0.0.1:${adminPort}/metrics`)).body.text()

  // Untouched: the defaults the faults must move away from.
  const before = await metrics()
  // (prom-client lists a labelled counter once it has moved.)
  t.equal(sample(before, 'ka_proxy_sessions_total', { route: 'echo' }) ?? 0, 0)
  t.equal(sample(before, 'ka_proxy_keepalive_deaths_total', { route: 'echo', leg: 'target' }) ?? 0, 0)
  t.equal(sample(before, 'ka_proxy_connect_failures_total', { route: 'refused', reason: 'connect_failed' }) ?? 0, 0)

  // echo: one session relays 5 bytes each way and stays open; a second one is reset by its
  // client; a third is refused by maxConnections (2).
  const held = await connect(port('echo'))
  held.write('hello')
  await once(held, 'data')
  const reset = await connect(port('echo'))
  reset.write('x')
  await once(reset, 'data')
  const overLimit = net.connect({ port: port('echo'), host: '127.0.0.1' })
  t.equal(await endOf(overLimit), 'ECONNRESET', 'beyond maxConnections: refused')
  reset.resetAndDestroy()
  await proxy.line((l) => l.msg === 'session closed' && l.route === 'echo' && l.reason === 'client_reset')

  // refused and silent: connect failures of both kinds. The refused one is reset so soon that
  // the client's own connect may not have completed yet.
  t.equal(await endOf(net.connect({ port: port('refused'), host: '127.0.0.1' })), 'ECONNRESET')
  t.equal(await endOf(await connect(port('silent'))), 'ECONNRESET')
  await proxy.line((l) => l.msg === 'session closed' && l.reason === 'connect_timeout')

  // dead: its heartbeat fails, so its target is down and clients are refused.
  await proxy.line((l) => l.msg === 'target down' && l.route === 'dead')
  t.equal(await endOf(net.connect({ port: port('dead'), host: '127.0.0.1' })), 'ECONNRESET')

  // flaky: up, a session on it, then its health URL answers 503: the session is killed.
  await proxy.line((l) => l.msg === 'target up' && l.route === 'flaky')
  const onFlaky = await connect(port('flaky'))
  onFlaky.write('y')
  await once(onFlaky, 'data')
  const flakyEnd = endOf(onFlaky)
  healthStatus.set(flaky.port, 503)
  t.equal(await flakyEnd, 'ECONNRESET', 'the session on a target marked down is reset')

  const m = await metrics()
  t.equal(sample(m, 'ka_proxy_sessions_active', { route: 'echo' }), 1, 'sessions_active: the held session')
  t.equal(sample(m, 'ka_proxy_sessions_total', { route: 'echo' }), 2, 'sessions_total: two accepted (the refused one is not a session)')
  t.equal(sample(m, 'ka_proxy_sessions_closed_total', { route: 'echo', reason: 'client_reset', leg: 'client' }), 1, 'closed: client_reset')
  t.equal(sample(m, 'ka_proxy_sessions_closed_total', { route: 'refused', reason: 'connect_failed', leg: 'target' }), 1, 'closed: connect_failed')
  t.equal(sample(m, 'ka_proxy_sessions_closed_total', { route: 'silent', reason: 'connect_timeout', leg: 'target' }), 1, 'closed: connect_timeout')
  t.equal(sample(m, 'ka_proxy_sessions_closed_total', { route: 'flaky', reason: 'target_down', leg: 'target' }), 1, 'closed: target_down')
  t.equal(sample(m, 'ka_proxy_bytes_total', { route: 'echo', direction: 'to_target' }), 6, 'bytes to the target, the open session included')
  t.equal(sample(m, 'ka_proxy_bytes_total', { route: 'echo', direction: 'to_client' }), 6, 'bytes to the client')
  t.equal(sample(m, 'ka_proxy_connect_failures_total', { route: 'refused', reason: 'connect_failed' }), 1, 'connect failures: refused')
  t.equal(sample(m, 'ka_proxy_connect_failures_total', { route: 'silent', reason: 'connect_timeout' }), 1, 'connect failures: timed out')
  t.equal(sample(m, 'ka_proxy_connect_seconds_count', { route: 'echo' }), 2, 'connect time observed per connected session')
  t.ok(sample(m, 'ka_proxy_connect_seconds_sum', { route: 'echo' })! > 0, 'and it is not zero')
  t.equal(sample(m, 'ka_proxy_connect_seconds_count', { route: 'refused' }) ?? 0, 0, 'a failed connect is not a connect time')
  t.equal(sample(m, 'ka_proxy_connections_refused_total', { route: 'echo', reason: 'max_connections' }), 1, 'refused: max_connections')
  t.equal(sample(m, 'ka_proxy_connections_refused_total', { route: 'dead', reason: 'no_healthy_target' }), 1, 'refused: no_healthy_target')
  t.equal(sample(m, 'ka_proxy_target_up', { route: 'dead', target: `127.0.0.1:${refusing}` }), 0, 'target_up 0 for a target whose heartbeat fails')
  t.equal(sample(m, 'ka_proxy_target_up', { route: 'flaky', target: `127.0.0.1:${flaky.port}` }), 0, 'target_up 0 once marked down')
  t.equal(sample(m, 'ka_proxy_target_up', { route: 'echo', target: `127.0.0.1:${echo.port}` }), 1, 'target_up 1 without heartbeats')

  t.test('keepalive death: a target whose packets are dropped', { skip: noNft }, async (t) => {
    // Drop everything the echo target sends: the held session's target-leg probes go unanswered.
    const table = `ka_proxy_metrics_${process.pid}`
    const nft = (...args: string[]): void => void execFileSync('nft', args)
    nft('add', 'table', 'inet', table)
    t.teardown(() => nft('delete', 'table', 'inet', table))
    nft('add', 'chain', 'inet', table, 'in', '{ type filter hook input priority -10 ; }')
    nft('add', 'rule', 'inet', table, 'in', 'tcp', 'sport', String(echo.port), 'drop')
    const heldEnd = endOf(held)
    const line = await proxy.line((l) => l.msg === 'session closed' && l.route === 'echo' && l.reason === 'keepalive_timeout', 15_000)
    t.match(line, { leg: 'target', targetClose: 'failed', clientClose: 'rst' })
    t.equal(await heldEnd, 'ECONNRESET')
    const after = await metrics()
    t.equal(sample(after, 'ka_proxy_keepalive_deaths_total', { route: 'echo', leg: 'target' }), 1, 'keepalive_deaths_total: the target leg')
    t.equal(sample(after, 'ka_proxy_sessions_closed_total', { route: 'echo', reason: 'keepalive_timeout', leg: 'target' }), 1)
    t.ok(await waitFor(async () => sample(await metrics(), 'ka_proxy_sessions_active', { route: 'echo' }) === 0, 2000), 'sessions_active back to 0')
  })
})
