#!/usr/bin/env node
// Entry point of the ka-proxy command. The Node version is checked before anything that needs a
// newer one is loaded (yargs 18 needs 20.19), so an old Node gets one line, not a stack trace.
import module from 'node:module'
import { SUPPORTED_NODE_LINES } from './version.ts'

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number)
if (major < 20 || (major === 20 && minor < 19)) {
  process.stderr.write(`ka-proxy: Node.js ${process.version} is too old: it needs 20.19 or newer (supported lines: ${SUPPORTED_NODE_LINES.join(', ')})\n`)
  process.exit(1)
}
// Node 22.1+: compiled code is cached on disk (NODE_COMPILE_CACHE, else the temporary directory),
// which cuts a start, and so an upgrade's, by the time spent compiling the modules.
const compileCache = module as { enableCompileCache?: () => unknown }
compileCache.enableCompileCache?.()
const { main } = await import('./cli.ts')
void main()
