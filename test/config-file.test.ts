// Config files: the examples in config/ load, and each kind of mistake is reported with
// the path of the key to fix.

import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfigFile } from '../src/config/file.ts'
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
  ['unknown profile', 'routes:\n  - {listen: 1, target: "a:1", keepalive: {profile: fast}}\n', /: routes\[0\]\.keepalive\.profile: must be one of kernel, database, aggressive-nat, ssh, satellite \(got "fast"\)$/],
  ['short admin token', 'admin: {listen: "0.0.0.0:9480", token: "abc"}\nroutes:\n  - {listen: 1, target: "a:1"}\n', /: admin\.token: must be at least 16 characters long$/],
  ['YAML syntax', 'routes:\n  - listen: 1\n   target: x\n', /^--config: .*: line 3: /],
  ['duplicate key', 'routes:\n  - {listen: 1, listen: 2, target: "a:1"}\n', /^--config: .*: line 2: Map keys must be unique/],
]

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

t.test('profiles: the seed presets, with the detection time each implies', async (t) => {
  t.same(PROFILES.kernel, { idle: 7200, interval: 75, count: 9, description: PROFILES.kernel.description })
  t.match(PROFILES, { database: { idle: 300, interval: 30, count: 5 }, 'aggressive-nat': { idle: 60, interval: 10, count: 6 }, ssh: { idle: 60, count: 5 }, satellite: { idle: 30, count: 10 } })
  const table = profilesTable()
  t.match(table, /^kernel\s+7200\s+75\s+9\s+7875 s \(2\.2 h\)/m)
  t.match(table, /^aggressive-nat\s+60\s+10\s+6\s+120 s \(2 min\)/m)
  t.equal(table.split('\n').length, 6)
})
