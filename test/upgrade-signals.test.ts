// The edges of an upgrade's hand-over, with the real command and a "new release" on disk that is
// the real one with a hook on the moment it sends 'ready': SIGTERM to the old process after the
// hand-over began and before the new process took over (the old process stops the new one and
// drains every session; none lost, none doubled), and a 'ready' the old process reads after its
// 10 s bound (it refuses it; the new process has relayed nothing and accepted no client).

import t from 'tap'
import { collect, connect, sleep, waitFor } from './helpers/net.ts'
import { alive, MAIN, NATIVE, oneSession, twoWayStreams, upgradeTestSetup } from './helpers/upgrade.ts'

const { dir } = upgradeTestSetup(t, 'upgrade-signals')

/**
 * The real entry point, with `hook` (JavaScript) run just before it sends 'ready', after a marker
 * line (`markAfter`: after the hook, for a hook the test must see done, not begun).
 */
const hookedEntry = (hook: string, markAfter = false): string =>
  `const { loadNative } = await import(${JSON.stringify(NATIVE)})\n` +
  `const n = loadNative().binding\nconst send = n.sendFds\n` +
  // Says when it starts accepting on a listening socket (the pump's acceptor).
  `const Acceptor = n.Acceptor\n` +
  `n.Acceptor = class extends Acceptor { constructor(...a) { process.stdout.write('HOOK accepting\\n'); super(...a) } }\n` +
  `n.sendFds = (sock, payload, fds, ms) => {\n` +
  `  if (payload.includes('"type":"ready"')) { ${markAfter ? `${hook}; process.stdout.write('HOOK ready\\n')` : `process.stdout.write('HOOK ready\\n'); ${hook}`} }\n` +
  `  return send(sock, payload, fds, ms)\n}\n` +
  `await import(${JSON.stringify(MAIN)})\n`

t.test('SIGTERM after the hand-over began, before the new process took over: every session stays whole and drains', async (t) => {
  const { entry, proxy, client, server } = await oneSession(t, dir, 'sigterm', ['--shutdown-grace', '60'])
  // The new release waits 1.5 s before its 'ready': the window for the signal.
  entry.install(hookedEntry('Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1500)'))
  const streams = twoWayStreams(client, server)
  proxy.proc.kill('SIGUSR2')
  await proxy.line((l) => l.msg === 'HOOK ready', 30_000)
  proxy.proc.kill('SIGTERM')
  const failed = await proxy.line((l) => l.msg.startsWith('upgrade failed'), 10_000)
  t.match(String(failed.reason), /stopping: the new process was stopped before it took over|was killed by SIGKILL/, `one line says why: ${String(failed.reason)}`)
  // The line names the new process (its own lines may never be written: it is stopped while
  // its event loop is blocked by the hook, before the turn that writes them ends).
  const newPid = Number(failed.newPid)
  t.ok(newPid > 0 && newPid !== proxy.proc.pid, `and the new process (pid ${newPid})`)
  t.ok(await waitFor(() => !alive(newPid), 5000), 'the new process was stopped')
  t.notOk(proxy.logs.some((l) => /could not be carried on here/.test(l.msg)), 'no session closed for want of a route')
  const whole = await streams.whole()
  t.ok(whole.arrived, 'the streams arrived while the old process drains')
  t.ok(whole.up, 'client to target: whole, in order, once')
  t.ok(whole.down, 'target to client: whole, in order, once')
  t.equal(proxy.proc.exitCode, null, 'the old process drains: it waits for the session')
  client.end()
  server.end()
  const line = await proxy.line((l) => l.msg === 'session closed', 10_000)
  t.same([line.pid, line.bytesToTarget, line.bytesToClient, line.reason], [proxy.proc.pid, 8 << 20, 8 << 20, 'client_end'], 'its one line, whole, from the old process')
  t.equal(await proxy.exited, 0, 'then exits as after any SIGTERM')
})

t.test("a 'ready' the old process reads after its 10 s bound is refused; the new process relays nothing before it is told to", async (t) => {
  const { port, entry, proxy, client, server, target } = await oneSession(t, dir, 'late')
  const oldPid = proxy.proc.pid!
  t.teardown(() => {
    try {
      process.kill(oldPid, 'SIGCONT')
    } catch {
      // gone
    }
  })
  const atServer = collect(server)
  // The new release stops the old process just before its 'ready': the old one reads it late.
  // The marker comes after the stop: before it, the old process could still relay what the
  // client writes next (CI once saw those 37 bytes arrive).
  entry.install(hookedEntry('process.kill(process.ppid, "SIGSTOP")', true))
  proxy.proc.kill('SIGUSR2')
  const starting = await proxy.line((l) => l.msg === 'upgrade: starting a new process', 30_000)
  await proxy.line((l) => l.msg === 'HOOK ready', 30_000)
  client.write('sent while the old process is stopped')
  // A client connecting now waits in the backlog: the new process accepts only once told.
  const waiting = await connect(port)
  let waitingEnd: string | undefined
  waiting.on('error', (err: NodeJS.ErrnoException) => (waitingEnd ??= String(err.code)))
  waiting.on('close', () => (waitingEnd ??= 'closed'))
  waiting.write('waited')
  await sleep(1500)
  t.equal(atServer.length(), 0, 'the new process, not yet told, relays nothing')
  t.notOk(proxy.logs.some((l) => l.msg === 'HOOK accepting'), 'and accepts on no listening socket')
  // Past the old process's bound (10 s from the attempt's start), then it runs again.
  await sleep(Math.max(0, Number(starting.time) + 10_500 - Date.now()))
  process.kill(oldPid, 'SIGCONT')
  const failed = await proxy.line((l) => l.msg.startsWith('upgrade failed'), 10_000)
  t.match(String(failed.reason), /did not report ready within 10 s|did not confirm/, `refused: ${String(failed.reason)}`)
  t.ok(await waitFor(() => atServer.length() >= 36, 5000), 'the old process relays what waited')
  client.write(' and after')
  t.ok(await waitFor(() => atServer.data().toString() === 'sent while the old process is stopped and after', 5000), `once, in order: ${JSON.stringify(atServer.data().toString())}`)
  const waitingServer = await target.next()
  const atWaiting = collect(waitingServer)
  t.ok(await waitFor(() => atWaiting.data().toString() === 'waited', 5000), `the client that connected meanwhile is served by the old process (${waitingEnd ?? 'open'})`)
  t.equal(waitingEnd, undefined, 'it was neither reset nor closed')
  waiting.end()
  waitingServer.end()
  const s2 = await connect(port)
  const s2Server = await target.next()
  s2.end()
  s2Server.end()
  t.notOk(proxy.logs.some((l) => l.msg.startsWith('upgrade done')), 'no upgrade done')
  t.equal(proxy.proc.exitCode, null, 'the old process serves on')
  client.end()
  server.end()
  t.equal(await proxy.stop('SIGTERM'), 0)
})
