// SIGHUP, the parts an operator leans on: a route whose listen address changed is replaced (the
// old address stops accepting, the new one relays, its open session drains); a route whose
// target changed sends the very next connection to the new target; a heartbeat added to a
// route starts checking at once; a removed route's idle session is closed with a FIN when
// shutdownGrace runs out, not before, not never.

import t from 'tap'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnProxy } from './helpers/cli.ts'
import { namedTarget } from './helpers/heartbeat.ts'
import { connect, endOf, freePort } from './helpers/net.ts'
import type { LogLine } from './helpers/proxy.ts'

const GRACE_S = 1

/** Reads the first line a target writes (its name), and echoes back `probe` once. */
async function named(port: number): Promise<{ socket: net.Socket; name: string }> {
  const socket = await connect(port)
  const [chunk] = (await once(socket, 'data')) as [Buffer]
  return { socket, name: chunk.toString().trim() }
}

async function echoes(socket: net.Socket, text: string): Promise<boolean> {
  const got = once(socket, 'data')
  socket.write(text)
  return String(((await got) as [Buffer])[0]) === text
}

t.test('SIGHUP: replaced listen address, new target and heartbeat at once, removed route drained within shutdownGrace', async (t) => {
  const [a, b] = await Promise.all([namedTarget(t, 'A'), namedTarget(t, 'B')])
  const refusing = await freePort()
  const [oldPort, newPort] = [await freePort(), await freePort()]
  const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-reload-'))
  const path = join(dir, 'reload.yaml')
  const route = (name: string, listen: string, target: string, extra = ''): string =>
    `  - name: ${name}\n    listen: ${listen}\n    target: ${target}\n${extra}`
  const write = (routes: string[]): void => writeFileSync(path, `shutdownGrace: ${GRACE_S}\nroutes:\n${routes.join('')}`)
  write([
    route('moving', `127.0.0.1:${oldPort}`, `127.0.0.1:${a.port}`),
    route('retarget', '127.0.0.1:0', `127.0.0.1:${a.port}`),
    route('checked', '127.0.0.1:0', `127.0.0.1:${refusing}`),
    route('gone', '127.0.0.1:0', `127.0.0.1:${a.port}`),
  ])
  const proxy = spawnProxy(['--config', path])
  t.teardown(() => proxy.stop('SIGKILL'))
  const listening = (name: string, after = 0): Promise<LogLine> =>
    proxy.line((l) => l.msg === 'listening' && l.route === name && proxy.logs.indexOf(l) >= after)
  const portOf = (l: LogLine): number => Number(String(l.address).split(':').pop())
  const retargetPort = portOf(await listening('retarget'))
  const gonePort = portOf(await listening('gone'))
  const checkedPort = portOf(await listening('checked'))
  await listening('moving')

  const onMoving = await named(oldPort)
  const onRetarget = await named(retargetPort)
  const onGone = await named(gonePort)
  t.same([onMoving.name, onRetarget.name, onGone.name], ['A', 'A', 'A'])

  const mark = proxy.logs.length
  write([
    route('moving', `127.0.0.1:${newPort}`, `127.0.0.1:${a.port}`),
    route('retarget', '127.0.0.1:0', `127.0.0.1:${b.port}`),
    route('checked', '127.0.0.1:0', `127.0.0.1:${refusing}`, '    heartbeat: { type: tcp, interval: 0.2, timeout: 0.2, fall: 1, rise: 1 }\n'),
  ])
  const reloadedAt = Date.now()
  const goneEnd = endOf(onGone.socket).then((how) => ({ how, ms: Date.now() - reloadedAt }))
  const movingEnd = new Promise<number>((resolve) => onMoving.socket.once('end', () => resolve(Date.now() - reloadedAt)))
  proxy.proc.kill('SIGHUP')
  const reloaded = await proxy.line((l) => l.msg === 'config reloaded')
  t.same([reloaded.started, reloaded.removed], [['moving'], ['gone']], 'moving is replaced (started again), gone removed')

  // The changed target: the very next connection goes to B; the open session stays on A.
  t.equal((await named(retargetPort)).name, 'B', 'a new connection goes to the new target at once')
  t.ok(await echoes(onRetarget.socket, 'still A'), 'the session opened before the reload still relays')

  // The heartbeat added to `checked` runs at once: its refusing target is marked down.
  const down = await proxy.line((l) => l.msg === 'target down' && l.route === 'checked', 3000)
  t.ok((down.time as number) - reloadedAt < 1500, `the new heartbeat marked the target down ${(down.time as number) - reloadedAt} ms after SIGHUP`)
  t.equal(await endOf(net.connect({ port: checkedPort, host: '127.0.0.1' })), 'ECONNRESET', 'and new clients are refused: no healthy target')
  await proxy.line((l) => l.msg === 'connection refused: no healthy target' && l.route === 'checked')

  // The replaced route: the old address no longer accepts, the new one relays.
  await listening('moving', mark)
  await t.rejects(connect(oldPort), { code: 'ECONNREFUSED' }, 'the old listen address is closed')
  const moved = await named(newPort)
  t.equal(moved.name, 'A', 'the new listen address relays')
  t.ok(await echoes(onMoving.socket, 'draining'), 'the session on the old address drains, still relaying')

  // The removed route's idle session: a FIN when shutdownGrace runs out.
  const gone = await goneEnd
  t.equal(gone.how, 'end', 'the removed route\'s idle session is closed with a FIN')
  t.ok(gone.ms >= GRACE_S * 1000 - 50 && gone.ms <= GRACE_S * 1000 + 700, `after the ${GRACE_S} s shutdownGrace (${gone.ms} ms)`)
  t.match(await proxy.line((l) => l.msg === 'session closed' && l.route === 'gone'), { reason: 'shutdown', clientClose: 'fin' })
  const movingMs = await movingEnd
  t.ok(movingMs <= GRACE_S * 1000 + 700, `the replaced route's old session gets its FIN within the same grace (${movingMs} ms)`)
  for (const s of [onRetarget.socket, moved.socket]) s.destroy()
})
