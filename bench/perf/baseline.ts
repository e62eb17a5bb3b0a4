// ka-proxy as of another git revision, run next to the working tree's in the same bench run:
// its src/ and native/ are extracted into a directory that borrows this checkout's node_modules,
// and its native helper is compiled there, so a change to the hot path is measured before and
// after under the same load. The revision's own addon is needed: the exports of the addon change
// between revisions (a baseline that loaded this checkout's addon would call functions it no
// longer has).

import { mkdirSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { run } from '../lab/exec.ts'
import { REPO_ROOT } from '../lab/node-script.ts'

/** What a revision needs to run: its source, its native helper and how that is built. */
const PARTS = ['src', 'native', 'scripts', 'binding.gyp', 'package.json', 'tsconfig.json']

/** Extracts `rev` into a new directory below `into`, builds its native helper, and returns that checkout's root. */
export async function checkoutRevision(rev: string, into: string): Promise<string> {
  const commit = await run('git', ['-C', REPO_ROOT, 'rev-parse', '--verify', `${rev}^{commit}`], { allowFail: true })
  if (commit.code !== 0) throw new RangeError(`--baseline: not a git revision here: "${rev}"`)
  const sha = commit.stdout.trim()
  const root = join(into, `ka-proxy-${sha.slice(0, 12)}`)
  mkdirSync(root, { recursive: true })
  const top = await run('git', ['-C', REPO_ROOT, 'ls-tree', '--name-only', sha])
  const parts = top.stdout.split('\n').filter((name) => PARTS.includes(name))
  await run('sh', ['-c', 'repo=$1 sha=$2 out=$3; shift 3; git -C "$repo" archive "$sha" "$@" | tar -x -C "$out"', 'sh', REPO_ROOT, sha, root, ...parts])
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'))
  const built = await run('npm', ['--prefix', root, 'run', '--silent', 'build:native'], { allowFail: true })
  if (built.code !== 0) throw new Error(`--baseline ${rev}: its native helper did not build:\n${(built.stderr || built.stdout).trim().split('\n').slice(-5).join('\n')}`)
  return root
}
