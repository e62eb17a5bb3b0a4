// Config files as operators check them: `ka-proxy check` validates without binding (like
// haproxy -c, nginx -t), and an error about a file names the file and key, never a flag.

import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, listen } from './helpers/net.ts'
import { runCli } from './helpers/cli.ts'

const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-check-'))
const writeConfig = (name: string, text: string): string => {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

t.test('check --config: validates without binding; exit 0 when valid, 2 naming the key when not', async (t) => {
  // The address is taken: check must not try to bind it.
  const { server, port } = await listen(() => {})
  t.teardown(() => server.close())
  const good = writeConfig('good.yaml', `routes:\n  - {name: db, listen: 127.0.0.1:${port}, target: "db1:5432"}\n  - {name: cache, listen: 16379, target: ["c1:6379", "c2:6379"]}\n`)
  const ok = runCli(['check', '--config', good])
  t.equal(ok.status, 0, 'valid')
  t.equal(ok.stderr, '')
  t.match(ok.stdout, new RegExp(`^${good.replace(/[.]/g, '\\.')}: valid, 2 routes\n`))
  t.match(ok.stdout, new RegExp(`^  db: 127\\.0\\.0\\.1:${port} -> db1:5432; client leg idle 60 s`, 'm'))
  t.match(ok.stdout, /^  cache: \*:16379 -> c1:6379,c2:6379;/m)
  const bad = writeConfig('bad.yaml', 'routes:\n  - {listen: 1, target: "a:1"}\n  - {listen: 2, target: "b:1", targetKeepalive: {idle: 0}}\n')
  const r = runCli(['check', '--config', bad])
  t.equal(r.status, 2)
  t.equal(r.stderr, `ka-proxy: ${bad}: routes[1].targetKeepalive.idle: must be at least 1 (got 0)\n`)
  t.equal(r.stdout, '')
  const flags = runCli(['check', '--listen', '0', '--target', 'db:0'])
  t.equal(flags.status, 2, 'flags are checked too')
  t.match(flags.stderr, /^ka-proxy: --target: port must be/)
  t.equal(runCli(['check', '--listen', '15432', '--target', 'db:5432']).status, 0)
})

t.test('a listen address clash or a taken address in a file names the key, not --listen', async (t) => {
  const port = await freePort()
  const cases: Array<[string, string]> = [
    [
      `routes:\n  - {name: a, listen: 127.0.0.1:${port}, target: "a:1"}\n  - {name: b, listen: 127.0.0.1:${port}, target: "b:1"}\n`,
      `routes[1].listen: 127.0.0.1:${port} clashes with route "a" (127.0.0.1:${port}): each route needs its own address`,
    ],
    [
      `routes:\n  - {name: all, listen: ${port}, target: "a:1"}\n  - {listen: 127.0.0.1:${port}, target: "b:1"}\n`,
      `routes[1].listen: 127.0.0.1:${port} clashes with route "all" (*:${port}): each route needs its own address`,
    ],
  ]
  for (const [i, [text, message]] of cases.entries()) {
    const path = writeConfig(`clash-${i}.yaml`, text)
    const args = i === 0 ? ['check', '--config', path] : ['--config', path]
    const r = runCli(args)
    t.equal(r.status, 2, `${args[0]}: exit 2`)
    t.equal(r.stderr, `ka-proxy: ${path}: ${message}\n`)
  }
  const { server, port: taken } = await listen(() => {})
  t.teardown(() => server.close())
  const path = writeConfig('taken.yaml', `routes:\n  - {name: a, listen: 0, target: "a:1"}\n  - {name: b, listen: 0, target: "b:1"}\n  - {listen: 127.0.0.1:${taken}, target: "c:1"}\n`)
  const r = runCli(['--config', path])
  t.equal(r.status, 3, 'port 0 never clashes; a taken address: exit 3')
  t.equal(r.stderr, `ka-proxy: ${path}: routes[2].listen: address 127.0.0.1:${taken} is already in use\n`)
  const adminPath = writeConfig('taken-admin.yaml', `admin: 127.0.0.1:${taken}\nroutes:\n  - {listen: 127.0.0.1:0, target: "c:1"}\n`)
  const admin = runCli(['--config', adminPath])
  t.equal(admin.status, 3, 'a taken admin address: exit 3')
  t.equal(admin.stderr, `ka-proxy: ${adminPath}: admin: address 127.0.0.1:${taken} is already in use\n`, 'names the key, not --admin')
})
