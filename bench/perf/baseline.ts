// ka-proxy as of another git revision, run next to the working tree's in the same bench run:
// its src/ is extracted into a directory that borrows this checkout's node_modules and native
// helper, so a change to the hot path is measured before and after under the same load.

import { mkdirSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { run } from '../lab/exec.ts'
import { REPO_ROOT } from '../lab/node-script.ts'

/** Extracts `rev` into a new directory below `into` and returns that checkout's root. */
export async function checkoutRevision(rev: string, into: string): Promise<string> {
  const commit = await run('git', ['-C', REPO_ROOT, 'rev-parse', '--verify', `${rev}^{commit}`], { allowFail: true })
  if (commit.code !== 0) throw new RangeError(`--baseline: not a git revision here: "${rev}"`)
  const root = join(into, `ka-proxy-${commit.stdout.trim().slice(0, 12)}`)
  mkdirSync(root, { recursive: true })
  await run('sh', ['-c', 'git -C "$0" archive "$1" src package.json tsconfig.json | tar -x -C "$2"', REPO_ROOT, commit.stdout.trim(), root])
  for (const shared of ['node_modules', 'native']) symlinkSync(join(REPO_ROOT, shared), join(root, shared))
  return root
}
