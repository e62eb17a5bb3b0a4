#!/usr/bin/env node
// Builds the socket-option helper in native/ with node-gyp.
// Without --strict a failed build is a warning, not a failed install: the proxy
// still runs on Node's own setKeepAlive (and says so at start-up).
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const strict = process.argv.includes('--strict')

function nodeGypCommand() {
  try {
    const require = createRequire(import.meta.url)
    return [process.execPath, require.resolve('node-gyp/bin/node-gyp.js')]
  } catch {
    // Installed without devDependencies: npm ships its own node-gyp and names it here.
    if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) {
      return [process.execPath, process.env.npm_config_node_gyp]
    }
    return ['node-gyp']
  }
}

// Node's own headers, when the machine has them, spare node-gyp a download
// (which fails on machines without internet access).
function localNodeDirArgs() {
  if (process.env.npm_config_nodedir) return []
  const prefix = dirname(dirname(process.execPath))
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? ['--nodedir', prefix] : []
}

const [cmd, ...pre] = nodeGypCommand()
const args = [...pre, 'rebuild', '--directory', join(root, 'native'), ...localNodeDirArgs()]
const result = spawnSync(cmd, args, {
  stdio: 'inherit',
})
if (result.status !== 0) {
  const reason = result.error ? result.error.message : `node-gyp exited with ${result.status}`
  const line = `ka-proxy: native socket-option helper not built (${reason}); ` +
    'the proxy will fall back to setKeepAlive (interval 1 s, count 10, no TCP_USER_TIMEOUT)'
  if (strict) {
    console.error(line)
    process.exit(1)
  }
  console.warn(line)
}
