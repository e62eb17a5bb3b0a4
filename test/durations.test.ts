// Times with units wherever a time is given: flags, KA_PROXY_* variables and config files
// take 1500ms, 30s, 5m, 1h (and sums such as 1m30s); a bare number stays seconds.

import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { durationSeconds } from '../src/config/duration.ts'
import { resolveOptions } from '../src/config/options.ts'
import { resolveAppConfig } from '../src/config/resolve.ts'
import { ConfigError } from '../src/errors.ts'
import { runCli } from './helpers/cli.ts'

const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-durations-'))

t.test('the duration syntax', async (t) => {
  const good: Array<[string, number]> = [
    ['30', 30], ['0.5', 0.5], ['30s', 30], ['5m', 300], ['1h', 3600], ['1d', 86400], ['1500ms', 1.5],
    ['1m30s', 90], ['1h30m', 5400], ['2.5s', 2.5], ['100ms', 0.1], [' 10s ', 10],
  ]
  for (const [text, seconds] of good) t.equal(durationSeconds(text), seconds, text)
  for (const text of ['', 's', '10x', '10 s', '-5s', '1m-30s', 'soon', '1.s', '5m10']) t.equal(durationSeconds(text), undefined, `"${text}" is not one`)
})

t.test('every time flag takes units; bare numbers stay seconds', async (t) => {
  const o = resolveOptions({
    listen: '0', target: 'a:1',
    keepalive: { shared: { idle: '1m', interval: '10s', count: 3, userTimeout: '2m' }, client: { idle: '5m' }, target: { interval: '5' } },
    connectTimeout: '1500ms', halfCloseTimeout: '2m', flushTimeout: '30s', shutdownGrace: '1m30s',
    heartbeat: { type: 'tcp', interval: '500ms', timeout: '250ms' },
  })
  t.same(o.keepalive.client, { idle: 300, interval: 10, count: 3, userTimeout: 120 })
  t.same(o.keepalive.target, { idle: 60, interval: 5, count: 3, userTimeout: 120 })
  t.match(o, { connectTimeout: 1.5, halfCloseTimeout: 120, flushTimeout: 30, shutdownGrace: 90, heartbeat: { interval: 0.5, timeout: 0.25 } })
  const bare = resolveOptions({ listen: '0', target: 'a:1', keepalive: { shared: { idle: 45 } }, connectTimeout: 3 })
  t.match(bare, { keepalive: { client: { idle: 45 } }, connectTimeout: 3 })
  t.throws(() => resolveOptions({ listen: '0', target: 'a:1', connectTimeout: 'soon' }), new ConfigError('--connect-timeout', 'must be a number of seconds, or a duration such as 1500ms, 30s, 5m, 1h (got "soon")'))
  t.throws(() => resolveOptions({ listen: '0', target: 'a:1', keepalive: { target: { idle: '1500ms' } } }), new ConfigError('--target-idle', 'must be a whole number from 1 to 32767 (got 1.5)'), 'the kernel takes whole seconds')
  t.throws(() => resolveOptions({ listen: '0', target: 'a:1', heartbeat: { type: 'tcp', interval: 'often' } }), { message: /^--heartbeat-interval: must be a number of seconds, or a duration/ })
})

t.test('config files take units too; errors name the key', async (t) => {
  const path = join(dir, 'units.yaml')
  writeFileSync(path, [
    'shutdownGrace: 1m',
    'routes:',
    '  - listen: 0',
    '    target: a:1',
    '    keepalive: { idle: 5m, interval: 30s, count: 4, userTimeout: 10m }',
    '    connectTimeout: 2500ms',
    '    halfCloseTimeout: 1h',
    '    flushTimeout: 15',
    '    heartbeat: { type: pg, interval: 1s, timeout: 500ms }',
    '',
  ].join('\n'))
  const config = resolveAppConfig({ config: path })
  t.equal(config.shutdownGrace, 60)
  t.match(config.routes[0], {
    keepalive: { client: { idle: 300, interval: 30, count: 4, userTimeout: 600 } },
    connectTimeout: 2.5, halfCloseTimeout: 3600, flushTimeout: 15, shutdownGrace: 60,
    heartbeat: { interval: 1, timeout: 0.5 },
  })
  const bad: Array<[string, string]> = [
    ['    connectTimeout: soon', 'routes[0].connectTimeout: must be a number of seconds, or a duration such as 1500ms, 30s, 5m, 1h (got "soon")'],
    ['    keepalive: { idle: 1500ms }', 'routes[0].keepalive.idle: must be a whole number (got "1500ms")'],
    ['    halfCloseTimeout: 2d', 'routes[0].halfCloseTimeout: must be at most 86400 (got "2d")'],
    ['    heartbeat: { type: tcp, timeout: 1x }', 'routes[0].heartbeat.timeout: must be a number of seconds, or a duration such as 1500ms, 30s, 5m, 1h (got "1x")'],
  ]
  for (const [i, [line, message]] of bad.entries()) {
    const file = join(dir, `bad-${i}.yaml`)
    writeFileSync(file, `routes:\n  - listen: 0\n    target: a:1\n${line}\n`)
    t.throws(() => resolveAppConfig({ config: file }), new ConfigError(`${file}: ${message.split(': ')[0]}`, message.slice(message.indexOf(': ') + 2)), line.trim())
  }
})

t.test('the command line and KA_PROXY_* variables take units', async (t) => {
  const r = runCli(['check', '--listen', '0', '--target', 'a:1', '--idle', '2m', '--interval', '15s', '--count', '2'], { KA_PROXY_TARGET_IDLE: '5m' })
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /client leg idle 120 s, interval 15 s × 2 \(dead after 150 s, user timeout 150 s\); target leg idle 300 s, interval 15 s × 2/)
  const bad = runCli(['check', '--listen', '0', '--target', 'a:1', '--shutdown-grace', '10 minutes'])
  t.equal(bad.status, 2)
  t.equal(bad.stderr, 'ka-proxy: --shutdown-grace: must be a number of seconds, or a duration such as 1500ms, 30s, 5m, 1h (got "10 minutes")\n')
})
