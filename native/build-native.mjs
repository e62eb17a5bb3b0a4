#!/usr/bin/env node
// Builds the native helper in this folder (socket options and the byte pump) with node-gyp.
//
//   node native/build-native.mjs            npm's install step. An installed package uses the
//                                           prebuilt binary it ships (prebuilds/, found by
//                                           node-gyp-build) and compiles only when none loads;
//                                           a git checkout always compiles. A failed build is a
//                                           warning: the proxy then runs its stream relay.
//   node native/build-native.mjs --strict   `npm run build:native`: compile, fail loudly.
//   node native/build-native.mjs --prebuild `npm pack` (prepack): compile a stripped N-API binary
//                                           into prebuilds/<platform>-<arch>/ for the package.
//
// Only Linux is built: the pump is written against epoll. Elsewhere this prints one line and
// ka-proxy uses the stream relay.
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const root = dirname(here)
const require = createRequire(import.meta.url)
const mode = process.argv.includes('--prebuild') ? 'prebuild' : process.argv.includes('--strict') ? 'strict' : 'install'

if (process.platform !== 'linux') {
  console.warn(`ka-proxy: the native helper builds only on Linux (its pump uses epoll); on ${process.platform} the proxy uses the stream relay`)
  process.exit(mode === 'prebuild' ? 1 : 0)
}

if (mode === 'install' && !existsSync(join(root, '.git')) && loadsAlready()) process.exit(0)

const ok = mode === 'prebuild' ? prebuild() : compile()
if (!ok) {
  const line = 'ka-proxy: native helper not built (see the compiler output above; it needs make, a C compiler and python3); ' +
    'the proxy will use the stream relay and setKeepAlive (interval 1 s, count 10, no TCP_USER_TIMEOUT)'
  if (mode !== 'install') {
    console.error(line)
    process.exit(1)
  }
  console.warn(line)
}

/** Whether a binary for this platform (a prebuilt one, or an earlier build) loads. */
function loadsAlready() {
  try {
    require('node-gyp-build')(here)
    return true
  } catch {
    return false
  }
}

function nodeGypPath() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js')
  } catch {
    // Installed without devDependencies: npm ships its own node-gyp and names it here.
    const npmGyp = process.env.npm_config_node_gyp
    return npmGyp && existsSync(npmGyp) ? npmGyp : undefined
  }
}

// Node's own headers, when the machine has them, spare node-gyp a download (which fails on
// machines without internet access). The addon uses N-API only (NAPI_VERSION in binding.gyp),
// so any Node's headers build a binary that loads on every supported line.
function nodeDirEnv() {
  if (process.env.npm_config_nodedir) return {}
  const prefix = dirname(dirname(process.execPath))
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? { npm_config_nodedir: prefix } : {}
}

function run(cmd, args, options = {}) {
  const result = spawnSync(cmd, args, { stdio: 'inherit', ...options, env: { ...process.env, ...nodeDirEnv(), ...options.env } })
  if (result.error) console.error(`ka-proxy: ${cmd}: ${result.error.message}`)
  return result.status === 0
}

function compile() {
  const gyp = nodeGypPath()
  const [cmd, ...pre] = gyp ? [process.execPath, gyp] : ['node-gyp']
  return run(cmd, [...pre, 'rebuild', '--directory', here])
}

// Built in a copy of the sources so that packing never touches the checkout's own build/
// (tests running at the same time load it).
function prebuild() {
  const gyp = nodeGypPath()
  const work = mkdtempSync(join(tmpdir(), 'ka-proxy-prebuild-'))
  try {
    for (const f of readdirSync(here)) if (/\.(c|h|gyp)$/.test(f)) copyFileSync(join(here, f), join(work, f))
    rmSync(join(here, 'prebuilds'), { recursive: true, force: true })
    const bin = require.resolve('prebuildify/bin.js')
    const args = [bin, '--napi', '--strip', '--tag-libc', '--target', `node@${process.versions.node}`, '--out', here]
    return run(process.execPath, args, { cwd: work, env: gyp ? { PREBUILD_NODE_GYP: `"${process.execPath}" "${gyp}"`, PREBUILD_SHELL: "/bin/sh", npm_config_loglevel: "warn" } : {} })
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}
