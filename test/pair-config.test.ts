// Paired mode's configuration: `ka-proxy pair-key` writes a secret safely, and every pair flag
// and route key is checked with one line naming it (exit 2, no stack trace).

import t from 'tap'
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCliAsync } from './helpers/cli.ts'

const dir = mkdtempSync(join(tmpdir(), 'ka-pair-config-'))
const SECRET = join(dir, 'pair.key')
const SHORT = join(dir, 'short.key')
writeFileSync(SECRET, `${'ab'.repeat(32)}\n`, { mode: 0o600 })
writeFileSync(SHORT, 'too short\n', { mode: 0o600 })

t.test('pair-key writes 256 random bits, mode 0600, and will not overwrite without --force', async (t) => {
  const file = join(dir, 'new.key')
  const first = await runCliAsync(['pair-key', file])
  t.equal(first.status, 0, first.stderr)
  const written = readFileSync(file, 'utf8')
  t.match(written, /^[0-9a-f]{64}\n$/, '64 hex characters')
  t.equal(statSync(file).mode & 0o777, 0o600, 'mode 0600')
  const again = await runCliAsync(['pair-key', file])
  t.equal(again.status, 2, 'refused')
  t.match(again.stderr, /^ka-proxy: pair-key: .*new\.key exists; add --force to replace it\n$/)
  t.equal(readFileSync(file, 'utf8'), written, 'the secret is untouched')
  const forced = await runCliAsync(['pair-key', file, '--force'])
  t.equal(forced.status, 0, forced.stderr)
  const replaced = readFileSync(file, 'utf8')
  t.match(replaced, /^[0-9a-f]{64}\n$/)
  t.not(replaced, written, 'a new secret')
  t.equal(statSync(file).mode & 0o777, 0o600, 'still mode 0600')
})

const FAR = ['--pair-listen', '127.0.0.1:0', '--target', '127.0.0.1:5432']
const NEAR = ['--listen', '127.0.0.1:0', '--pair-connect', '127.0.0.1:16432']
const S = ['--pair-secret-file', SECRET]

const BAD_INPUT: Array<[string, string[], RegExp]> = [
  ['pair-key without a file', ['pair-key'], /^ka-proxy: pair-key: needs one FILE/],
  ['--force without pair-key', ['check', ...NEAR, ...S, '--force'], /^ka-proxy: --force: only goes with the pair-key command/],
  ['far end without a secret', FAR, /^ka-proxy: --pair-secret-file: is required with --pair-listen/],
  ['near end without a secret', NEAR, /^ka-proxy: --pair-secret-file: is required with --pair-connect/],
  ['unreadable secret file', [...NEAR, '--pair-secret-file', join(dir, 'missing.key')], /^ka-proxy: --pair-secret-file: cannot read .*missing\.key \(ENOENT\)/],
  ['short secret', [...NEAR, '--pair-secret-file', SHORT], /^ka-proxy: --pair-secret-file: .*short\.key holds 9 characters; a pair secret needs at least 32/],
  ['far end without a target', ['--pair-listen', '0', ...S], /^ka-proxy: --target: is required/],
  ['neither listen nor pair-listen', ['--target', '127.0.0.1:5432'], /^ka-proxy: --listen: is required/],
  ['far end with --listen', [...FAR, ...S, '--listen', '0'], /^ka-proxy: --listen: not with --pair-listen/],
  ['near end with --target', [...NEAR, ...S, '--target', '127.0.0.1:5432'], /^ka-proxy: --target: not with --pair-connect/],
  ['both ends in one route', [...FAR, ...S, '--pair-connect', '127.0.0.1:1'], /^ka-proxy: --pair-connect: not with --pair-listen/],
  ['near end without --listen', ['--pair-connect', '127.0.0.1:1', ...S], /^ka-proxy: --listen: is required/],
  ['pair-connect without a port', ['--listen', '0', '--pair-connect', 'far', ...S], /^ka-proxy: --pair-connect: expected host:port/],
  ['pair-listen port out of range', ['--pair-listen', '70000', '--target', '127.0.0.1:1', ...S], /^ka-proxy: --pair-listen: port must be a number from 0 to 65535/],
  ['--pair-heartbeat 0', [...NEAR, ...S, '--pair-heartbeat', '0'], /^ka-proxy: --pair-heartbeat: must be a number of seconds from 0\.05/],
  ['--resume-window not a duration', [...NEAR, ...S, '--resume-window', 'soon'], /^ka-proxy: --resume-window: must be a number of seconds/],
  ['pair setting on a plain route', ['--listen', '0', '--target', '127.0.0.1:1', '--pair-heartbeat', '5'], /^ka-proxy: --pair-heartbeat: has no effect without --pair-listen or --pair-connect/],
]

t.test('bad pair input: one line naming the flag, exit code 2', async (t) => {
  for (let i = 0; i < BAD_INPUT.length; i += 2) {
    const batch = BAD_INPUT.slice(i, i + 2)
    // Through `check` (nothing binds), except the pair-key command itself.
    const results = await Promise.all(batch.map(([, args]) => runCliAsync(args[0] === 'pair-key' || args[0] === 'check' ? args : ['check', ...args])))
    for (const [j, [name, , message]] of batch.entries()) {
      const r = results[j]!
      t.equal(r.status, 2, `${name}: exit code 2`)
      t.match(r.stderr, message, `${name}: message`)
      t.equal(r.stderr.trim().split('\n').length, 1, `${name}: exactly one line`)
      t.equal(r.stdout, '', `${name}: nothing on stdout`)
    }
  }
})

t.test('route keys: checked with the file and key path; a valid pair passes check', async (t) => {
  const config = (route: object): string => {
    const file = join(dir, `config-${Math.random().toString(36).slice(2)}.json`)
    writeFileSync(file, JSON.stringify({ routes: [route] }))
    return file
  }
  const good = config({ name: 'near', listen: '127.0.0.1:0', pairConnect: 'far.example:16432', pairSecretFile: SECRET, pairHeartbeat: '2s', resumeWindow: 30 })
  const ok = await runCliAsync(['check', '--config', good])
  t.equal(ok.status, 0, ok.stderr)
  t.match(ok.stdout, /near: 127\.0\.0\.1:0 -> far\.example:16432 \(pair near end\)/)
  const noSecret = config({ pairListen: 16432, target: '127.0.0.1:5432' })
  const r1 = await runCliAsync(['check', '--config', noSecret])
  t.equal(r1.status, 2)
  t.match(r1.stderr, /^ka-proxy: .*: routes\[0\]\.pairSecretFile: is required with routes\[0\]\.pairListen/)
  const badWindow = config({ pairListen: 16432, target: '127.0.0.1:5432', pairSecretFile: SECRET, resumeWindow: 0 })
  const r2 = await runCliAsync(['check', '--config', badWindow])
  t.equal(r2.status, 2)
  t.match(r2.stderr, /^ka-proxy: .*: routes\[0\]\.resumeWindow: must be at least 0\.1/)
  const short = config({ listen: 0, pairConnect: 'far:1', pairSecretFile: SHORT })
  const r3 = await runCliAsync(['check', '--config', short])
  t.equal(r3.status, 2)
  t.match(r3.stderr, /^ka-proxy: .*: routes\[0\]\.pairSecretFile: .*short\.key holds 9 characters/)
})
