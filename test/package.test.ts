// The package a user installs: `npm pack`, then `npm install` of the tarball into an empty
// directory on a PATH without any compiler, then `npx ka-proxy doctor` there. The native helper
// must load from the prebuilt binary the package ships, on whichever Node runs this test (CI
// runs it on every supported line). Packing runs in a copy of the checkout, so the checkout's
// own dist/ and native/build/ are never rebuilt under tests running at the same time.

import t from 'tap'
import { spawnSync, type SpawnSyncReturns } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const work = mkdtempSync(join(tmpdir(), 'ka-proxy-package-'))
t.teardown(() => rmSync(work, { recursive: true, force: true }))

/** The environment without the test runner's variables. */
const plainEnv: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => k !== 'NODE_OPTIONS' && !k.startsWith('TAP') && !k.startsWith('_TAPJS')),
)

/**
 * Runs a command as a user would. Through env(1) because the test runner puts its loader back
 * into NODE_OPTIONS of every child it sees spawned, and tsc must not run under it.
 */
function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = plainEnv): SpawnSyncReturns<string> {
  return spawnSync('/usr/bin/env', ['-u', 'NODE_OPTIONS', cmd, ...args], { cwd, env, encoding: 'utf8', timeout: 180_000 })
}

function failed(r: SpawnSyncReturns<string>): string {
  return `exit ${r.status}${r.error ? ` (${r.error.message})` : ''}\n${r.stdout}\n${r.stderr}`.slice(-4000)
}

/** npm's own entry scripts, found from the npm that runs this machine's `npm`. */
function npmCli(name: 'npm-cli.js' | 'npx-cli.js'): string {
  const r = sh('npm', ['prefix', '-g'], root)
  const candidates = [
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', name),
    join(r.stdout.trim(), 'lib', 'node_modules', 'npm', 'bin', name),
    join(dirname(realpathSync(sh('sh', ['-c', 'command -v npm'], root).stdout.trim() || '/nonexistent')), name),
  ]
  const found = candidates.find((p) => existsSync(p))
  if (!found) throw new Error(`cannot find npm's ${name}`)
  return found
}

/** A PATH holding only sh, node, npm and npx: no cc, g++, make or python3. */
function bareBin(): string {
  const bin = join(work, 'bin')
  mkdirSync(bin)
  symlinkSync('/bin/sh', join(bin, 'sh'))
  symlinkSync(process.execPath, join(bin, 'node'))
  symlinkSync(npmCli('npm-cli.js'), join(bin, 'npm'))
  symlinkSync(npmCli('npx-cli.js'), join(bin, 'npx'))
  return bin
}

function packTarball(): string {
  const copy = join(work, 'checkout')
  mkdirSync(copy)
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'LICENSE']) {
    cpSync(join(root, f), join(copy, f))
  }
  cpSync(join(root, 'src'), join(copy, 'src'), { recursive: true })
  cpSync(join(root, 'config'), join(copy, 'config'), { recursive: true })
  mkdirSync(join(copy, 'native'))
  for (const f of readdirSync(join(root, 'native'))) {
    if (/\.(c|h|gyp|mjs)$/.test(f)) cpSync(join(root, 'native', f), join(copy, 'native', f))
  }
  symlinkSync(join(root, 'node_modules'), join(copy, 'node_modules'))
  const r = sh('npm', ['pack', '--silent', '--pack-destination', work], copy)
  if (r.status !== 0) throw new Error(`npm pack failed: ${failed(r)}`)
  const name = r.stdout.trim().split('\n').pop() ?? ''
  return join(work, name)
}

const tarball = packTarball()
const bin = bareBin()
const env: NodeJS.ProcessEnv = { ...plainEnv, PATH: bin, npm_config_update_notifier: 'false' }
delete env.npm_config_nodedir
const app = join(work, 'app')
mkdirSync(app)
writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }))
const compilers = ['cc', 'gcc', 'g++', 'make', 'python3']

t.test('the bare PATH really has no compiler', async (t) => {
  for (const c of compilers) {
    const r = sh('sh', ['-c', `command -v ${c}`], app, env)
    t.not(r.status, 0, `${c} is not on the PATH`)
  }
})

t.test('npm install of the tarball, then npx ka-proxy doctor: native helper in use', async (t) => {
  const install = sh(process.execPath, [join(bin, 'npm'), 'install', '--prefer-offline', '--no-audit', '--no-fund', tarball], app, env)
  t.equal(install.status, 0, `npm install succeeds: ${install.status === 0 ? '' : failed(install)}`)
  const pkg = join(app, 'node_modules', 'ka-proxy')
  t.notOk(existsSync(join(pkg, 'native', 'build')), 'nothing was compiled at install (the prebuilt binary loaded)')
  const doctor = sh(process.execPath, [join(bin, 'npx'), '--no-install', 'ka-proxy', 'doctor'], app, env)
  t.equal(doctor.status, 0, `doctor exits 0: ${doctor.status === 0 ? '' : failed(doctor)}`)
  t.match(doctor.stdout, /^native socket helper: in use/m, 'doctor: native helper in use')
  t.match(doctor.stdout, new RegExp(`on Node ${process.version.replace(/\./g, '\\.')}\\b`), 'doctor names the Node that runs it')
  t.match(doctor.stdout, /^ok$/m, 'options read back as set')
})

t.test('the package holds what building and debugging need', async (t) => {
  const pkg = join(app, 'node_modules', 'ka-proxy')
  for (const f of ['LICENSE', 'native/ka_native.h', 'native/binding.gyp', 'native/build-native.mjs', 'native/prebuilds/linux-x64']) {
    t.ok(existsSync(join(pkg, f)), `${f} is in the package`)
  }
  t.match(readFileSync(join(pkg, 'LICENSE'), 'utf8'), /^MIT License/, 'LICENSE is the MIT licence package.json names')
  const maps: string[] = []
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name))
      else if (e.name.endsWith('.js.map')) maps.push(join(dir, e.name))
    }
  }
  walk(join(pkg, 'dist'))
  t.ok(maps.length > 10, `source maps shipped (${maps.length})`)
  const missing: string[] = []
  for (const map of maps) {
    const { sources } = JSON.parse(readFileSync(map, 'utf8')) as { sources: string[] }
    for (const s of sources) {
      const target = resolve(dirname(map), s)
      if (!existsSync(target)) missing.push(`${relative(pkg, map)} -> ${s}`)
    }
  }
  t.same(missing, [], 'every source map points at a file in the package')
})

t.test("an installed package without a usable binary: doctor says so and gives npm's rebuild command", async (t) => {
  const prebuilds = join(app, 'node_modules', 'ka-proxy', 'native', 'prebuilds')
  rmSync(prebuilds, { recursive: true, force: true })
  const doctor = sh(process.execPath, [join(app, 'node_modules', 'ka-proxy', 'dist', 'main.js'), 'doctor'], app, env)
  t.equal(doctor.status, 1, 'doctor fails')
  t.match(doctor.stdout, /^native socket helper: NOT in use \(no binary for linux-x64: build it with npm rebuild ka-proxy/m, 'advice for an installed package')
  t.notMatch(doctor.stdout, /build:native/, 'not the checkout-only script')
})
