// --on-down drain and keep leave a down target's sessions alone; drain sends new
// connections elsewhere, keep only logs. The targets speak a small line protocol checked
// with send/expect: "HELLO" is answered "OK ready" while healthy, "ERR sick" otherwise;
// any other line is echoed back prefixed with the server's name.

import t, { type Test } from 'tap'
import { once } from 'node:events'
import type { Socket } from 'node:net'
import { createInterface } from 'node:readline'
import { startCliProxy } from './helpers/cli.ts'
import { server } from './helpers/heartbeat.ts'
import { connect, sleep } from './helpers/net.ts'
import { startProxy } from './helpers/proxy.ts'

const HB = { interval: 0.2, timeout: 0.2, fall: 2, rise: 1 }

async function lineServer(t: Test, name: string): Promise<{ port: number; healthy: boolean }> {
  const state = { port: 0, healthy: true }
  const { port } = await server(t, (s) => {
    s.on('end', () => s.end())
    createInterface({ input: s }).on('line', (line) => {
      if (line === 'HELLO') s.end(state.healthy ? 'OK ready\n' : 'ERR sick\n')
      else s.write(`${name}:${line}\n`)
    })
  })
  state.port = port
  return state
}

/** A client of the line protocol: `ask` sends a line and resolves with the answer. */
async function lineClient(port: number): Promise<{ socket: Socket; ask(line: string): Promise<string> }> {
  const socket = await connect(port)
  socket.on('error', () => {})
  const lines = createInterface({ input: socket })
  return {
    socket,
    async ask(line) {
      const answer = once(lines, 'line') as Promise<[string]>
      socket.write(`${line}\n`)
      return (await answer)[0]
    },
  }
}

t.test('--on-down drain (real command, send/expect flags): sessions kept, new connections elsewhere', async (t) => {
  const [a, b] = await Promise.all([lineServer(t, 'A'), lineServer(t, 'B')])
  const proxy = await startCliProxy([
    '--target', `127.0.0.1:${a.port},127.0.0.1:${b.port}`,
    '--heartbeat', 'send', '--heartbeat-send', 'HELLO\\n', '--heartbeat-expect', 'OK',
    '--heartbeat-interval', String(HB.interval), '--heartbeat-timeout', String(HB.timeout),
    '--heartbeat-fall', String(HB.fall), '--heartbeat-rise', String(HB.rise),
    '--on-down', 'drain',
    // Back to A once it is up again (the default, manual, would stay on B until SIGHUP).
    '--failback', 'auto',
  ])
  t.teardown(() => proxy.stop('SIGKILL'))
  const A = `127.0.0.1:${a.port}`
  await proxy.line((l) => l.msg === 'target up' && l.target === A)
  const old = await lineClient(proxy.port)
  t.equal(await old.ask('one'), 'A:one')

  a.healthy = false
  const down = await proxy.line((l) => l.msg === 'target down' && l.target === A)
  t.match(down, { reason: 'bad_reply', detail: 'expected a reply starting "OK", got "ERR sick\\n"', onDown: 'drain', kept: 1 })
  await sleep(HB.interval * 1000 * 2)
  t.equal(await old.ask('two'), 'A:two', 'the old session still relays')
  t.notOk(proxy.logs.some((l) => l.msg === 'session closed'), 'no session was closed')
  const fresh = await lineClient(proxy.port)
  t.equal(await fresh.ask('three'), 'B:three', 'a new session goes to the other target')
  fresh.socket.destroy()

  a.healthy = true
  await proxy.line((l) => l.msg === 'target up' && l.target === A && l.from === 'down')
  const again = await lineClient(proxy.port)
  t.equal(await again.ask('four'), 'A:four', 'up again after rise: used again')
  again.socket.destroy()
  old.socket.destroy()
})

t.test('--on-down keep: sessions kept and new connections still go to the target; only the log says it is down', async (t) => {
  const [a, b] = await Promise.all([lineServer(t, 'A'), lineServer(t, 'B')])
  const proxy = await startProxy({
    target: `127.0.0.1:${a.port},127.0.0.1:${b.port}`,
    heartbeat: { type: 'send', send: 'HELLO\\n', expect: 'OK', ...HB, onDown: 'keep' },
  })
  t.teardown(() => proxy.stop())
  const old = await lineClient(proxy.port)
  t.equal(await old.ask('one'), 'A:one')
  a.healthy = false
  b.healthy = false
  await sleep((HB.interval * HB.fall + HB.timeout) * 1000 + 300)
  t.match(proxy.logs.filter((l) => l.msg === 'target down'), [{ onDown: 'keep', kept: 1 }, { onDown: 'keep', kept: 0 }], 'both marked down, in the log')
  t.equal(await old.ask('two'), 'A:two', 'the old session still relays')
  const fresh = await lineClient(proxy.port)
  t.equal(await fresh.ask('three'), 'A:three', 'new connections still go to the first target, not refused')
  t.equal(proxy.listener.sessions.size, 2)
  t.notOk(proxy.logs.some((l) => l.msg === 'session closed' || l.msg === 'connection refused: no healthy target'))
  fresh.socket.destroy()
  old.socket.destroy()
})
