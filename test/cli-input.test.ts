// Bad input on the command line: one line naming the flag, exit code 2, no stack trace, nothing
// on stdout. (The running command's behaviour is in cli.test.ts.)

import t from 'tap'
import { runCliAsync } from './helpers/cli.ts'

const TARGET = ['--target', '127.0.0.1:5432']

const BAD_INPUT: Array<[string, string[], RegExp]> = [
  ['missing --target', ['--listen', '15432'], /^ka-proxy: --target: is required/],
  ['missing --listen', ['--target', '127.0.0.1:5432'], /^ka-proxy: --listen: is required/],
  ['bad listen port', ['--listen', '99999', ...TARGET], /^ka-proxy: --listen: port must be a number from 0 to 65535 \(got 99999\)/],
  ['listen port not a number', ['--listen', 'abc', ...TARGET], /^ka-proxy: --listen: port must be a number/],
  ['target without port', ['--listen', '15432', '--target', 'db'], /^ka-proxy: --target: expected host:port/],
  ['target port 0', ['--listen', '15432', '--target', 'db:0'], /^ka-proxy: --target: port must be a number from 1 to 65535/],
  ['IPv6 without brackets', ['--listen', '::1:15432', ...TARGET], /^ka-proxy: --listen: write an IPv6 address in brackets/],
  ['--idle 0', ['--listen', '15432', ...TARGET, '--idle', '0'], /^ka-proxy: --idle: must be a whole number from 1 to 32767 \(got 0\)/],
  ['--idle 40000', ['--listen', '15432', ...TARGET, '--idle', '40000'], /^ka-proxy: --idle: must be a whole number from 1 to 32767/],
  ['--idle not a number', ['--listen', '15432', ...TARGET, '--idle', 'soon'], /^ka-proxy: --idle: must be a number/],
  ['--interval 0', ['--listen', '15432', ...TARGET, '--interval', '0'], /^ka-proxy: --interval: must be a whole number from 1 to 32767/],
  ['--count 200', ['--listen', '15432', ...TARGET, '--count', '200'], /^ka-proxy: --count: must be a whole number from 1 to 127 \(got 200\)/],
  ['--target-count 0', ['--listen', '15432', ...TARGET, '--target-count', '0'], /^ka-proxy: --target-count: must be a whole number from 1 to 127/],
  ['--client-idle 2.5', ['--listen', '15432', ...TARGET, '--client-idle', '2.5'], /^ka-proxy: --client-idle: must be a whole number/],
  ['--user-timeout -1', ['--listen', '15432', ...TARGET, '--user-timeout', '-1'], /^ka-proxy: --user-timeout: must be 0 \(off\) or from 0\.001/],
  ['--user-timeout below 1 ms', ['--listen', '15432', ...TARGET, '--user-timeout', '0.0001'], /^ka-proxy: --user-timeout: must be 0 \(off\) or from 0\.001 .* \(got 0\.0001\)/],
  ['empty admin token', ['--listen', '15432', ...TARGET, '--admin', '127.0.0.1:0', '--admin-token='], /^ka-proxy: --admin-token: must be at least 16 characters long \(it is empty\)/],
  ['short admin token', ['--listen', '15432', ...TARGET, '--admin', '0.0.0.0:0', '--admin-token', 'x'], /^ka-proxy: --admin-token: must be at least 16 characters long \(got 1\)/],
  ['--connect-timeout 0', ['--listen', '15432', ...TARGET, '--connect-timeout', '0'], /^ka-proxy: --connect-timeout: must be a number of seconds/],
  ['--backlog 0', ['--listen', '15432', ...TARGET, '--backlog', '0'], /^ka-proxy: --backlog: must be a whole number from 1 to 2147483647 \(got 0\)/],
  ['--backlog 1.5', ['--listen', '15432', ...TARGET, '--backlog', '1.5'], /^ka-proxy: --backlog: must be a whole number from 1/],
  ['flag without value', ['--listen', '15432', ...TARGET, '--idle'], /^ka-proxy: --idle: needs a value/],
  ['unknown flag', ['--listen', '15432', ...TARGET, '--idel', '5'], /^ka-proxy: --idel: unknown option/],
  ['unknown command', ['frobnicate'], /^ka-proxy: frobnicate: unknown command/],
  ['bad log level', ['--listen', '15432', ...TARGET, '--log-level', 'loud'], /^ka-proxy: --log-level: must be one of/],
]

t.test('bad input: one line naming the flag, exit code 2, no stack trace', async (t) => {
  // Two at a time: each is a whole start of the command, and there are many.
  const results = await inBatches(BAD_INPUT, 2, ([, args]) => runCliAsync(args))
  for (const [i, [name, , message]] of BAD_INPUT.entries()) {
    const r = results[i]!
    t.equal(r.status, 2, `${name}: exit code 2`)
    t.match(r.stderr, message, `${name}: message`)
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: exactly one line`)
    t.notMatch(r.stderr, /\n\s+at /, `${name}: no stack trace`)
    t.equal(r.stdout, '', `${name}: nothing on stdout`)
  }
})

t.test('the admin token from the environment is checked as the flag is', async (t) => {
  const r = await runCliAsync(['--listen', '15432', ...TARGET, '--admin', '0.0.0.0:0'], { KA_PROXY_ADMIN_TOKEN: 'x' })
  t.equal(r.status, 2)
  t.match(r.stderr, /^ka-proxy: --admin-token: must be at least 16 characters long \(got 1\)\n$/)
})

/** Runs `run` over `items`, `width` at a time, the results in the order of the items. */
async function inBatches<T, R>(items: T[], width: number, run: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = []
  for (let i = 0; i < items.length; i += width) results.push(...(await Promise.all(items.slice(i, i + width).map(run))))
  return results
}
