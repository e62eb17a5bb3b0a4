// How the process ends: a second SIGTERM closes every session at once (the README's
// promise, timed), and an exception nothing caught stops the process with a non-zero exit
// so that a supervisor restarts it, instead of relaying on in an unknown state.

import t from 'tap'
import { fileURLToPath } from 'node:url'
import { connect, endOf, listen } from './helpers/net.ts'
import { startCliProxy } from './helpers/cli.ts'

t.test('a second SIGTERM closes every session at once, in running and removed routes alike', async (t) => {
  // A target that accepts and never ends anything: sessions stay open until the proxy ends them.
  const { server, port } = await listen(() => {})
  t.teardown(() => server.close())
  const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`, '--shutdown-grace', '60'])
  t.teardown(() => proxy.stop('SIGKILL'))
  const clients = await Promise.all(Array.from({ length: 5 }, () => connect(proxy.port)))
  await proxy.line((l) => l.msg === 'session opened' && l.session === 5)
  const ends = clients.map((c) => endOf(c))
  proxy.proc.kill('SIGTERM')
  await proxy.line((l) => l.msg === 'shutting down')
  await new Promise((r) => setTimeout(r, 300))
  t.equal(proxy.logs.filter((l) => l.msg === 'session closed').length, 0, 'the first signal waits for the grace (60 s)')
  const second = performance.now()
  proxy.proc.kill('SIGTERM')
  const exited = await Promise.race([proxy.exited, new Promise<string>((r) => setTimeout(() => r('still running after 5 s'), 5000))])
  const ms = performance.now() - second
  t.equal(exited, 0, 'exit code 0')
  t.ok(ms < 5000, `exited ${ms.toFixed(0)} ms after the second signal (grace 60 s)`)
  t.same(await Promise.all(ends), ['end', 'end', 'end', 'end', 'end'], 'every client got a FIN')
  t.equal(proxy.logs.filter((l) => l.msg === 'session closed' && l.reason === 'shutdown').length, 5)
})

t.test('an uncaught exception outside any session: one fatal line, exit 70', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const preload = fileURLToPath(new URL('./fixtures/throw-on-signal.mjs', import.meta.url))
  const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`], { NODE_OPTIONS: `--import ${preload}` })
  t.teardown(() => proxy.stop('SIGKILL'))
  proxy.proc.kill('SIGUSR2')
  const code = await Promise.race([proxy.exited, new Promise<string>((r) => setTimeout(() => r('still running 10 s later'), 10_000))])
  t.equal(code, 70, 'exits with EX_SOFTWARE, for a supervisor to restart it')
  t.match(proxy.logs.find((l) => l.level === 60), { msg: 'uncaught exception: exiting', origin: 'uncaughtException', err: { message: 'thrown outside any session' } }, 'a fatal log line')
})
