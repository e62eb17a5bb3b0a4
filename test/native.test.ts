// The socket-option helper on real sockets: what is set is what getsockopt reads back,
// accepted sockets inherit from the listener, and bad fds or values are errors, not crashes.

import t from 'tap'
import { openSync, closeSync } from 'node:fs'
import net from 'node:net'
import { once } from 'node:events'
import { loadNative } from '../src/keepalive/native.ts'
import { KeepaliveApplier, fdOf } from '../src/keepalive/socket-options.ts'
import { resolveKeepalive, validateKeepalive, LIMITS } from '../src/keepalive/settings.ts'
import { ConfigError, SocketOptionError } from '../src/errors.ts'
import { connectedSocket } from './helpers/net.ts'

const load = loadNative()
if (!load.ok) throw new Error(`native helper must be built for these tests: ${load.reason}`)
const binding = load.binding
const applier = new KeepaliveApplier()

t.test('set, then read back with getsockopt, for several settings', async (t) => {
  const socket = await connectedSocket(t)
  const cases = [
    { idle: 1, interval: 1, count: 1, userTimeout: 2 },
    { idle: 5, interval: 2, count: 3, userTimeout: 11 },
    { idle: 60, interval: 10, count: 6, userTimeout: 120 },
    { idle: 300, interval: 30, count: 5, userTimeout: 0 },
    { idle: 32767, interval: 32767, count: 127, userTimeout: 0.5 },
  ]
  for (const wanted of cases) {
    const applied = applier.apply(socket, wanted)
    t.same(applied, { ...wanted, native: true }, `reports ${JSON.stringify(wanted)} as applied`)
    t.same(applier.read(socket), { enabled: true, ...wanted }, `reads back ${JSON.stringify(wanted)}`)
  }
})

t.test('setKeepAlive after the helper resets interval and count: why nothing calls it', async (t) => {
  const socket = await connectedSocket(t)
  applier.apply(socket, { idle: 30, interval: 7, count: 4, userTimeout: 58 })
  socket.setKeepAlive(true, 30_000)
  const back = applier.read(socket)
  t.equal(back.idle, 30)
  t.equal(back.interval, 1, 'libuv forces interval 1 s')
  t.equal(back.count, 10, 'libuv forces count 10')
})

t.test('accepted sockets inherit keepalive from the listening socket', async (t) => {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const wanted = { idle: 17, interval: 3, count: 4, userTimeout: 29 }
  t.ok(applier.applyToListener(server, wanted))
  const accepted = once(server, 'connection')
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  const [socket] = (await accepted) as [net.Socket]
  t.teardown(() => {
    socket.destroy()
    client.destroy()
    server.close()
  })
  t.same(applier.read(socket), { enabled: true, ...wanted })
})

t.test('TCP_INFO and the send queue on a live connection', async (t) => {
  const socket = await connectedSocket(t)
  const info = applier.tcpInfo(socket)
  t.equal(info.state, 1, 'TCP_ESTABLISHED')
  for (const key of ['rttUs', 'rttvarUs', 'retransmits', 'probes', 'backoff', 'unacked', 'lastDataRecvMs', 'lastAckRecvMs', 'totalRetrans']) {
    t.type((info as unknown as Record<string, unknown>)[key], 'number', `${key} is reported`)
  }
  t.equal(applier.sendQueueBytes(socket), 0, 'nothing queued on an idle socket')
})

t.test('bad file descriptors become SocketOptionError, never a crash', async (t) => {
  const file = openSync(new URL(import.meta.url), 'r')
  t.teardown(() => closeSync(file))
  const closedFd = openSync(new URL(import.meta.url), 'r')
  closeSync(closedFd)
  for (const [fd, code] of [[-1, 'EBADF'], [closedFd, 'EBADF'], [1_000_000, 'EBADF'], [file, 'ENOTSOCK']] as const) {
    t.throws(() => binding.getKeepalive(fd), { code }, `getKeepalive(${fd}) -> ${code}`)
    t.throws(() => binding.setKeepalive(fd, 1, 10, 10, 3, 0), { code, syscall: 'setsockopt' }, `setKeepalive(${fd}) -> ${code}`)
    t.throws(() => binding.tcpInfo(fd), { code }, `tcpInfo(${fd}) -> ${code}`)
  }
  t.throws(() => (binding.setKeepalive as (...a: unknown[]) => void)('x'), { code: 'KA_NATIVE_ARG' }, 'non-number arguments are a TypeError')
  const destroyed = new net.Socket()
  t.throws(() => applier.apply(destroyed, resolveKeepalive({})), SocketOptionError, 'a socket without fd is refused by the wrapper')
  t.throws(() => fdOf(destroyed), { code: 'KA_ERR_SOCKOPT', errno: 'EBADF' } as unknown as Error)
})

t.test('out-of-range values: the kernel refuses them, the wrapper never sends them', async (t) => {
  const socket = await connectedSocket(t)
  const fd = fdOf(socket)
  t.throws(() => binding.setKeepalive(fd, 1, 0, 10, 3, -1), { code: 'EINVAL', option: 'TCP_KEEPIDLE' })
  t.throws(() => binding.setKeepalive(fd, 1, 10, 40000, 3, -1), { code: 'EINVAL', option: 'TCP_KEEPINTVL' })
  t.throws(() => binding.setKeepalive(fd, 1, 10, 10, 200, -1), { code: 'EINVAL', option: 'TCP_KEEPCNT' })
  const keyOf = (f: string): string => `--${f}`
  const ok = resolveKeepalive({})
  for (const bad of [
    { idle: 0 }, { idle: 32768 }, { idle: 1.5 }, { interval: 0 }, { interval: 32768 },
    { count: 0 }, { count: 128 }, { userTimeout: -1 }, { userTimeout: LIMITS.userTimeout.max + 1 },
  ]) {
    const key = Object.keys(bad)[0]!
    t.throws(() => validateKeepalive({ ...ok, ...bad }, keyOf), ConfigError, `${JSON.stringify(bad)} is refused`)
    t.throws(() => validateKeepalive({ ...ok, ...bad }, keyOf), { key: `--${key}` } as unknown as Error, 'naming the field')
  }
  t.doesNotThrow(() => validateKeepalive({ idle: 32767, interval: 32767, count: 127, userTimeout: 0 }, keyOf))
})

t.test('user timeout is derived as idle + interval × count unless given', async (t) => {
  t.same(resolveKeepalive({ idle: 5, interval: 2, count: 3 }), { idle: 5, interval: 2, count: 3, userTimeout: 11 })
  t.same(resolveKeepalive({}), { idle: 60, interval: 10, count: 6, userTimeout: 120 })
  t.same(resolveKeepalive({ idle: 5, interval: 2, count: 3, userTimeout: 0 }).userTimeout, 0, '0 disables')
  t.same(resolveKeepalive({ idle: 9 }, { idle: 5, interval: 2, count: 3 }), { idle: 9, interval: 2, count: 3, userTimeout: 15 }, 'per-leg override on a shared base')
})

t.test('fallback reports what Node can really do', async (t) => {
  const fallback = new KeepaliveApplier({ native: false })
  t.equal(fallback.native, false)
  t.match(fallback.fallbackReason, /--no-native/)
  const socket = await connectedSocket(t)
  t.same(fallback.apply(socket, { idle: 7, interval: 3, count: 2, userTimeout: 13 }), {
    idle: 7, interval: 1, count: 10, userTimeout: 0, native: false,
  })
  t.same(applier.read(socket), { enabled: true, idle: 7, interval: 1, count: 10, userTimeout: 0 }, 'and that is what the kernel has')
  t.throws(() => fallback.read(socket), { errno: 'ENOTSUP' } as unknown as Error)
})
