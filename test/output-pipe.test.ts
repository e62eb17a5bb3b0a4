// A command whose reader goes away (`ka-proxy doctor | head -1`) ends quietly with exit 0, as
// C tools do on SIGPIPE: no "fatal" line, no stack trace.

import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url))

for (const command of ['doctor', 'profiles']) {
  t.test(`${command} | head -1: exit 0, nothing on stderr`, async (t) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, command], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    // Read the first chunk, then close the pipe as head does.
    await once(child.stdout, 'data')
    child.stdout.destroy()
    const [code] = await once(child, 'exit') as [number | null]
    t.equal(code, 0)
    t.equal(stderr, '')
  })
}
