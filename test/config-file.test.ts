// Config files: the examples in config/ load, and each kind of mistake is reported with
// the path of the key to fix.

import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfigFile, loadConfigFileOffLoop, MAX_CONFIG_BYTES } from '../src/config/file.ts'
import { resolveAppConfig } from '../src/config/resolve.ts'
import { runCli } from './helpers/cli.ts'
import { ConfigError } from '../src/errors.ts'
import { PROFILES, profilesTable } from '../src/keepalive/profiles.ts'

const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-config-'))
const file = (name: string, text: string): string => {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

t.test('the shipped examples are valid', async (t) => {
  const example = loadConfigFile(new URL('../config/ka-proxy.example.yaml', import.meta.url).pathname)
  t.equal(example.routes.length, 2)
  t.match(example.routes[0], { name: 'main-db', listen: 15432, target: 'db1:5432', clientKeepalive: { idle: 300 }, maxConnections: 1000 })
  t.equal(example.admin, '127.0.0.1:9480')
  const minimal = loadConfigFile(new URL('../config/ka-proxy.minimal.json', import.meta.url).pathname)
  t.same(minimal.routes[0]!.keepalive, { profile: 'database' }, 'plain JSON is accepted')
})

const BAD: Array<[string, string, RegExp]> = [
  ['out of range, in the second route', 'routes:\n  - {listen: 1, target: "a:1"}\n  - {listen: 2, target: "b:1", targetKeepalive: {idle: 0}}\n', /: routes\[1\]\.targetKeepalive\.idle: must be at least 1 \(got 0\)$/],
  ['count above the kernel limit', 'routes:\n  - {listen: 1, target: "a:1", keepalive: {count: 200}}\n', /: routes\[0\]\.keepalive\.count: must be at most 127 \(got 200\)$/],
  ['not a whole number', '{"routes": [{"listen": 1, "target": "a:1", "keepalive": {"idle": 1.5}}]}', /: routes\[0\]\.keepalive\.idle: must be a whole number \(got 1\.5\)$/],
  ['a typo in a key', 'routes:\n  - {listen: 1, target: "a:1", keepalve: {idle: 5}}\n', /: routes\[0\]\.keepalve: unknown key$/],
  ['an unknown top-level key', 'route: []\n', /: route: unknown key$/],
  ['no routes', 'routes: []\n', /: routes: needs at least 1 entry$/],
  ['missing routes', 'admin: 127.0.0.1:9480\n', /: routes: expected a list \(got nothing\)$/],
  ['wrong type', 'routes:\n  - {listen: 1, target: "a:1", maxConnections: many}\n', /: routes\[0\]\.maxConnections: expected a number \(got "many"\)$/],
  ['backlog out of range', 'routes:\n  - {listen: 1, target: "a:1", backlog: 0}\n', /: routes\[0\]\.backlog: must be at least 1 \(got 0\)$/],
  ['unknown profile', 'routes:\n  - {listen: 1, target: "a:1", keepalive: {profile: fast}}\n', /: routes\[0\]\.keepalive\.profile: must be one of kernel, database, aggressive-nat, ssh, satellite \(got "fast"\)$/],
  ['NaN', 'routes:\n  - {listen: 1, target: "a:1", connectTimeout: .nan}\n', /: routes\[0\]\.connectTimeout: must be a finite number \(got \.nan\)$/],
  ['infinity', 'routes:\n  - {listen: 1, target: "a:1", halfCloseTimeout: .inf}\n', /: routes\[0\]\.halfCloseTimeout: must be a finite number \(got \.inf\)$/],
  ['a literal that overflows', 'routes:\n  - {listen: 1, target: "a:1", keepalive: {idle: 1e309}}\n', /: routes\[0\]\.keepalive\.idle: must be a finite number \(got \.inf\)$/],
  ['a typo in a heartbeat key', 'routes:\n  - {listen: 1, target: "a:1", heartbeat: {type: pg, intervall: 2}}\n', /: routes\[0\]\.heartbeat\.intervall: unknown key$/],
  ['heartbeat not a mapping', 'routes:\n  - {listen: 1, target: "a:1", heartbeat: pg}\n', /: routes\[0\]\.heartbeat: expected a mapping with at least "type" \(got "pg"\)$/],
  ['unknown heartbeat check', 'routes:\n  - {listen: 1, target: "a:1", heartbeat: {type: mysql}}\n', /: routes\[0\]\.heartbeat\.type: must be tcp, pg, redis, send or an http\(s\):\/\/ URL \(got "mysql"\)$/],
  ['heartbeat fall out of range', 'routes:\n  - {listen: 1, target: "a:1", heartbeat: {type: pg, fall: 0}}\n', /: routes\[0\]\.heartbeat\.fall: must be a whole number from 1 to 100 \(got 0\)$/],
  ['heartbeat interval too long', 'routes:\n  - {listen: 1, target: "a:1", heartbeat: {type: pg, interval: 2h}}\n', /: routes\[0\]\.heartbeat\.interval: must be a number of seconds from 0\.01 to 3600 \(got 7200\)$/],
  ['bad onDown', 'routes:\n  - {listen: 1, target: "a:1", heartbeat: {type: pg, onDown: explode}}\n', /: routes\[0\]\.heartbeat\.onDown: must be one of kill, drain, keep \(got explode\)$/],
  ['bad escape in expect', 'routes:\n  - {listen: 1, target: "a:1", heartbeat: {type: send, expect: "a\\\\q"}}\n', /: routes\[0\]\.heartbeat\.expect: unknown escape "\\q"/],
  ['YAML syntax', 'routes:\n  - listen: 1\n   target: x\n', /^--config: .*: line 3: /],
  ['duplicate key', 'routes:\n  - {listen: 1, listen: 2, target: "a:1"}\n', /^--config: .*: line 2: Map keys must be unique/],
]

t.test('heartbeat: a combination that does not hold names the key in the file, or the flag that set it', async (t) => {
  const path = file('heartbeat-combination.yaml', 'routes:\n  - {listen: 1, target: "a:1", heartbeat: {interval: 1, timeout: 0.5}}\n')
  t.throws(() => resolveAppConfig({ config: path }), { message: `${path}: routes[0].heartbeat.interval: has no effect without ${path}: routes[0].heartbeat.type (the check to run)` })
  t.throws(() => resolveAppConfig({ config: path, heartbeat: { type: 'pg', timeout: 2 } }), { message: '--heartbeat-timeout: must not be longer than the interval (1 s): checks of a target never overlap' })
  const ok = resolveAppConfig({ config: path, heartbeat: { type: 'pg' } })
  t.match(ok.routes[0]!.heartbeat, { check: { type: 'pg' }, interval: 1, timeout: 0.5 }, 'the flag and the file combine')
})

t.test('bad configs: one error naming the path', async (t) => {
  for (const [name, text, message] of BAD) {
    const path = file(`${name.replace(/\W+/g, '-')}.yaml`, text)
    t.throws(() => loadConfigFile(path), ConfigError, `${name}: a ConfigError`)
    try {
      loadConfigFile(path)
    } catch (err) {
      t.match((err as Error).message, message, name)
      t.equal((err as ConfigError).exitCode, 2)
    }
  }
  t.throws(() => loadConfigFile(join(dir, 'missing.yaml')), { message: /^--config: cannot read .*missing\.yaml \(ENOENT\)$/ } as unknown as Error)
})

t.test('the admin token is checked the same in a file as on the command line', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['"abc"', /: admin\.token: must be at least 16 characters long \(got 3\)$/],
    ['""', /: admin\.token: must be at least 16 characters long \(it is empty\)$/],
    ['"sixteen chars ok"', /: admin\.token: must be printable ASCII without spaces$/],
  ]
  for (const [token, message] of cases) {
    const path = file('token.yaml', `admin: {listen: "0.0.0.0:9480", token: ${token}}\nroutes:\n  - {listen: 1, target: "a:1"}\n`)
    t.throws(() => resolveAppConfig({ config: path }), { message } as unknown as Error, token)
  }
  const ok = file('token-ok.yaml', 'admin: {listen: "0.0.0.0:9480", token: "0123456789abcdef"}\nroutes:\n  - {listen: 1, target: "a:1"}\n')
  t.equal(resolveAppConfig({ config: ok }).admin?.token, '0123456789abcdef')
})

t.test('a file too large, or an alias bomb, is one error: exit 2, no parse at all or a bounded one', async (t) => {
  const big = file('big.yaml', `routes:\n${'  - {listen: 0, target: "a:1"}\n'.repeat(Math.ceil(MAX_CONFIG_BYTES / 30))}`)
  const started = performance.now()
  t.throws(() => loadConfigFile(big), { message: /^--config: .*big\.yaml is larger than 256 KiB/, exitCode: 2 } as unknown as Error)
  t.ok(performance.now() - started < 100, 'refused before parsing')
  // Each level names the previous one nine times: 9^10 nodes if expanded.
  const levels = ['a0: &a0 [x, x, x, x, x, x, x, x, x]']
  for (let i = 1; i < 10; i++) levels.push(`a${i}: &a${i} [${Array(9).fill(`*a${i - 1}`).join(', ')}]`)
  const bomb = file('bomb.yaml', `${levels.join('\n')}\nroutes:\n  - {listen: 0, target: "a:1"}\n`)
  for (const load of [loadConfigFile, loadConfigFileOffLoop]) {
    try {
      await load(bomb)
      t.fail('an alias bomb must not load')
    } catch (err) {
      t.match(err, { exitCode: 2, message: /^--config: .*bomb\.yaml: too many YAML aliases \(at most 100\)/ }, load.name)
    }
  }
  const r = runCli(['--config', bomb])
  t.equal(r.status, 2)
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  t.match(r.stderr, /^ka-proxy: --config: .*: too many YAML aliases/)
})

t.test('parsing on reload happens off the event loop', async (t) => {
  const routes = Array.from({ length: 2000 }, (_, i) => `  - name: r${i}\n    listen: 127.0.0.1:${10000 + i}\n    target: db${i}.example:5432\n    keepalive: {profile: database}\n`)
  const path = file('many.yaml', `routes:\n${routes.join('')}`)
  let worst = 0
  let last = performance.now()
  const ticker = setInterval(() => {
    const now = performance.now()
    worst = Math.max(worst, now - last)
    last = now
  }, 5)
  const loaded = await loadConfigFileOffLoop(path)
  clearInterval(ticker)
  t.equal(loaded.routes.length, 2000)
  // Parsed here, this file blocks the loop for over a second (about 10 ms per KB).
  t.ok(worst < 400, `longest event-loop gap ${worst.toFixed(0)} ms`)
})

t.test('profiles: the seed presets, with the detection time each implies', async (t) => {
  t.same(PROFILES.kernel, { idle: 7200, interval: 75, count: 9, description: PROFILES.kernel.description })
  t.match(PROFILES, { database: { idle: 300, interval: 30, count: 5 }, 'aggressive-nat': { idle: 60, interval: 10, count: 6 }, ssh: { idle: 60, count: 5 }, satellite: { idle: 30, count: 10 } })
  const table = profilesTable()
  t.match(table, /^kernel\s+7200\s+75\s+9\s+7875 s \(2\.2 h\)/m)
  t.match(table, /^aggressive-nat\s+60\s+10\s+6\s+120 s \(2 min\)/m)
  t.equal(table.split('\n').length, 6)
})
