// SIGHUP is all or nothing: everything new is bound before anything changes; a reload
// that cannot bind leaves every route, session and the admin API as they were.

import t, { type Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Socket } from 'node:net'
import { request } from 'undici'
import { connect, echo, echoServer, freePort, listen, sleep, waitFor } from './helpers/net.ts'
import { spawnProxy, type RunningProxy } from './helpers/cli.ts'

const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-reload-'))


async function roundTrip(s: Socket, text: string): Promise<string> {
  s.write(text)
  return String(await new Promise<Buffer>((r) => s.once('data', r)))
}

async function adminUp(port: number): Promise<boolean> {
  try {
    const res = await request(`http://127.0.0.1:${port}/healthz`, { headersTimeout: 2000 })
    await res.body.dump()
    return res.statusCode === 200
  } catch {
    return false
  }
}

async function reload(proxy: RunningProxy): Promise<string> {
  const seen = proxy.logs.length
  proxy.proc.kill('SIGHUP')
  const line = await proxy.line((l) => proxy.logs.indexOf(l) >= seen && (l.msg === 'config reloaded' || l.msg.startsWith('config reload rejected')))
  return line.msg === 'config reloaded' ? 'reloaded' : `rejected: ${String(line.error)}`
}

t.test('a route moved to an address that cannot bind: rejected, and nothing else changes', async (t) => {
  const echoPort = await echoServer(t)
  const [portA, portB, adminPort] = [await freePort(), await freePort(), await freePort()]
  const taken = await listen(() => {})
  t.teardown(() => taken.server.close())
  const file = join(dir, 'routes.yaml')
  const config = (b: number, admin: number): string =>
    `admin: 127.0.0.1:${admin}\nshutdownGrace: 0.5\nroutes:\n  - {name: a, listen: "127.0.0.1:${portA}", target: "127.0.0.1:${echoPort}"}\n  - {name: b, listen: "127.0.0.1:${b}", target: "127.0.0.1:${echoPort}"}\n`
  writeFileSync(file, config(portB, adminPort))
  const proxy = spawnProxy(['--config', file])
  t.teardown(() => proxy.stop('SIGKILL'))
  await waitFor(() => proxy.logs.some((l) => l.msg === 'admin listening'), 15_000)
  const live = await Promise.all(Array.from({ length: 5 }, () => connect(portB)))
  for (const s of live) t.equal(await roundTrip(s, 'x'), 'x')

  writeFileSync(file, config(taken.port, adminPort))
  t.match(await reload(proxy), /^rejected: .*address 127\.0\.0\.1:\d+ is already in use/)
  t.equal(await echo(portB, 'still accepting'), 'still accepting', 'route b still accepts new clients')
  await sleep(1000) // twice the grace a drained route would get
  for (const s of live) t.equal(await roundTrip(s, 'y'), 'y', 'its live sessions were not drained')
  t.ok(await adminUp(adminPort), 'the admin API is up')

  // The admin API moved to a taken port: rejected, and still served where it was.
  writeFileSync(file, config(portB, taken.port))
  t.match(await reload(proxy), /^rejected: \S+routes\.yaml: admin: address 127\.0\.0\.1:\d+ is already in use/, "names the file's key, not --admin")
  t.ok(await adminUp(adminPort), 'the admin API still answers on its address')
  // Restoring the file is a no-op that keeps it up.
  writeFileSync(file, config(portB, adminPort))
  t.equal(await reload(proxy), 'reloaded')
  t.ok(await adminUp(adminPort), 'and after the file is restored')
  for (const s of live) s.destroy()
})

t.test('a port handed from a leaving route to a new one: renames and swaps work, and roll back', async (t) => {
  const echoPort = await echoServer(t)
  const [portA, portB] = [await freePort(), await freePort()]
  const file = join(dir, 'handover.yaml')
  const route = (name: string, port: number | string): string => `  - {name: ${name}, listen: "127.0.0.1:${port}", target: "127.0.0.1:${echoPort}"}\n`
  writeFileSync(file, `routes:\n${route('a', portA)}${route('b', portB)}`)
  const proxy = spawnProxy(['--config', file])
  t.teardown(() => proxy.stop('SIGKILL'))
  await waitFor(() => proxy.logs.filter((l) => l.msg === 'listening').length === 2, 15_000)
  const held = await connect(portA)
  t.equal(await roundTrip(held, 'h'), 'h')

  // Renamed, same address: the new route takes the port over.
  writeFileSync(file, `routes:\n${route('a2', portA)}${route('b', portB)}`)
  t.equal(await reload(proxy), 'reloaded')
  t.equal(await echo(portA, 'renamed'), 'renamed')
  t.equal(await roundTrip(held, 'i'), 'i', 'the old route drains its session')

  // Swapped ports, plus a third route on a taken port: rejected, and both ports answer as before.
  const taken = await listen(() => {})
  t.teardown(() => taken.server.close())
  writeFileSync(file, `routes:\n${route('a2', portB)}${route('b', portA)}${route('c', taken.port)}`)
  t.match(await reload(proxy), /^rejected: .*address .* is already in use/)
  t.equal(await echo(portA, 'a back'), 'a back', 'the port handed over is listened on again')
  t.equal(await echo(portB, 'b back'), 'b back')
  // The same swap without the bad route goes through.
  writeFileSync(file, `routes:\n${route('a2', portB)}${route('b', portA)}`)
  t.equal(await reload(proxy), 'reloaded')
  t.equal(await echo(portA, 'swapped'), 'swapped')
  held.destroy()
})
