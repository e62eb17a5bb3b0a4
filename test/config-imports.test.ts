// src/config/ is the bottom layer: the CLI, the app, the admin API and the heartbeat checkers
// import it, never the other way round, so a config can be read and checked (ka-proxy check,
// a reload) without loading the relay, the admin server, undici or pino.

import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const CONFIG = join(ROOT, 'src/config')

/**
 * What config may reach below itself: definitions with no runtime behind them (pid-file.ts
 * only writes and removes one file, with node:fs).
 */
const ALLOWED_FILES = new Set(['src/errors.ts', 'src/keepalive/settings.ts', 'src/keepalive/profiles.ts', 'src/pid-file.ts'])
const ALLOWED_PACKAGES = new Set(['zod', 'yaml'])

/** Every `from '…'` of a file, type-only imports included (they still tie the layers). */
function importsOf(file: string): string[] {
  return [...readFileSync(file, 'utf8').matchAll(/^\s*(?:import|export)\b[^'"]*?\bfrom\s+'([^']+)'/gm)].map((m) => m[1]!)
}

t.test('src/config imports only itself, errors.ts, keepalive settings and profiles, pid-file.ts, zod and yaml', async (t) => {
  const seen = new Set<string>()
  const bad: string[] = []
  const queue = readdirSync(CONFIG).filter((f) => f.endsWith('.ts')).map((f) => join(CONFIG, f))
  t.ok(queue.length >= 5, 'the config modules are found')
  while (queue.length > 0) {
    const file = queue.shift()!
    if (seen.has(file)) continue
    seen.add(file)
    for (const spec of importsOf(file)) {
      const from = relative(ROOT, file)
      if (spec.startsWith('node:')) continue
      if (!spec.startsWith('.')) {
        if (!ALLOWED_PACKAGES.has(spec)) bad.push(`${from} imports the package ${spec}`)
        continue
      }
      const target = resolve(dirname(file), spec)
      const name = relative(ROOT, target)
      if (!name.startsWith('src/config/') && !ALLOWED_FILES.has(name)) bad.push(`${from} imports ${name}`)
      else queue.push(target)
    }
  }
  t.same(bad, [], 'no import runs upward')
  t.ok(seen.has(join(ROOT, 'src/keepalive/settings.ts')), 'and the scan follows imports out of src/config')
})
