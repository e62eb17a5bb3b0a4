// The native addon on real sockets: what is set is what getsockopt reads back, accepted
// sockets inherit from the listener, bad fds or values are errors, not crashes; the pump's
// class checks its arguments, drops the events of a registration its leg outlived, runs what its callbacks
// queue when its dispatch ends, survives a throwing callback and is one pump per thread; a reader
// hands its reads to JavaScript, paused when told, a dead socket read to its end; sendSome
// writes what the kernel takes and reports the rest.

import t, { type Test } from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { openSync, closeSync, fstatSync, readdirSync, readFileSync, readlinkSync, writeSync } from 'node:fs'
import net, { type AddressInfo, type Socket } from 'node:net'
import { once } from 'node:events'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { CONNECT_KEEPALIVE, CONNECT_START, EV_DATA, EV_EOF, EV_ERROR, loadNative, nativeBinaryPath, RELAY_OWN_FD, RELAY_READER, type NativeRelay } from '../src/native.ts'
import { SocketControl, fdOf } from '../src/socket-control.ts'
import { resolveKeepalive, validateKeepalive, LIMITS } from '../src/keepalive/settings.ts'
import { ConfigError, SocketOptionError } from '../src/errors.ts'
import { collect, connect, connectedSocket, listen, sleep, waitFor } from './helpers/net.ts'

const load = loadNative()
if (!load.ok) throw new Error(`native helper must be built for these tests: ${load.reason}`)
const binding = load.binding
const applier = new SocketControl()

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

t.test('sendSome: what the kernel took, 0 when full, -errno on a failure (not thrown); the peer reads exactly what it said', async (t) => {
  let peer: Socket | undefined
  const { server, port } = await listen((s) => {
    peer = s
    s.pause()
  })
  t.teardown(() => server.close())
  const socket = await connect(port)
  // The peer's reset below reaches this socket's own read too.
  socket.on('error', () => {})
  t.teardown(() => socket.destroy())
  t.ok(await waitFor(() => peer !== undefined, 2000), 'accepted')
  const fd = fdOf(socket)
  const first = Buffer.from('through the kernel, not Node\'s stream')
  t.equal(binding.sendSome(fd, first), first.length, 'a small piece is taken whole')
  t.equal(binding.sendSome(fd, Buffer.alloc(0)), 0, 'an empty piece sends nothing')
  // The peer does not read: the kernel takes pieces until its buffers are full, the last in part.
  const big = Buffer.alloc(1024 * 1024)
  for (let i = 0; i < big.length; i++) big[i] = i % 251
  let sent = first.length
  let partial = false
  let full = false
  for (let i = 0; i < 200 && !full; i++) {
    const n = binding.sendSome(fd, big)
    if (n < 0 || n > big.length) t.fail(`sendSome returned ${n}`)
    if (n > 0 && n < big.length) partial = true
    if (n === 0) full = true
    sent += n
  }
  t.ok(full, 'a full socket takes nothing (EAGAIN is 0, not an error)')
  t.ok(partial, 'the piece that filled it was taken in part')
  const got = collect(peer!)
  peer!.resume()
  t.ok(await waitFor(() => got.length() >= sent, 10_000), `the peer reads all ${sent} bytes`)
  const data = got.data()
  t.equal(data.length, sent, 'no byte more')
  t.ok(data.subarray(0, first.length).equals(first), 'the first piece first')
  let same = true
  for (let at = first.length; at < data.length && same; at++) same = data[at] === ((at - first.length) % big.length) % 251
  t.ok(same, 'the rest byte for byte, in order')
  // The peer resets: a failure comes back as -errno, never thrown, never a signal.
  peer!.resetAndDestroy()
  t.ok(await waitFor(() => binding.sendSome(fd, first) < 0, 2000), 'a send after the peer reset fails')
  t.ok([-32, -104].includes(binding.sendSome(fd, first)), 'with -EPIPE or -ECONNRESET')
  const closedFd = openSync(new URL(import.meta.url), 'r')
  closeSync(closedFd)
  t.equal(binding.sendSome(closedFd, first), -9, 'a closed descriptor: -EBADF')
  t.throws(() => (binding.sendSome as (...a: unknown[]) => number)(fd, 'text'), { code: 'KA_NATIVE_ARG' }, 'a piece that is not a Buffer throws')
  t.throws(() => (binding.sendSome as (...a: unknown[]) => number)('x', first), { code: 'KA_NATIVE_ARG' }, 'a descriptor that is not a number throws')
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
  const fallback = new SocketControl({ native: false })
  t.equal(fallback.native, false)
  t.match(fallback.fallbackReason, /--no-native/)
  const socket = await connectedSocket(t)
  t.same(fallback.apply(socket, { idle: 7, interval: 3, count: 2, userTimeout: 13 }), {
    idle: 7, interval: 1, count: 10, userTimeout: 0, native: false,
  })
  t.same(applier.read(socket), { enabled: true, idle: 7, interval: 1, count: 10, userTimeout: 0 }, 'and that is what the kernel has')
  t.throws(() => fallback.read(socket), { errno: 'ENOTSUP' } as unknown as Error)
})

// ---- the byte pump's class (native/ka_relay.c) -------------------------------------------------

const ADDON = load.ok ? nativeBinaryPath() : ''

/** The registrations ('tfd:' lines) of every epoll set of this process (/proc/self/fdinfo). */
function epollRegistrations(): string[] {
  const lines: string[] = []
  for (const entry of readdirSync('/proc/self/fd')) {
    let link: string
    try {
      link = readlinkSync(`/proc/self/fd/${entry}`)
    } catch {
      continue
    }
    if (link !== 'anon_inode:[eventpoll]') continue
    lines.push(...readFileSync(`/proc/self/fdinfo/${entry}`, 'utf8').split('\n').filter((line) => line.startsWith('tfd:')))
  }
  return lines
}

/** Whether any epoll set of this process still lists descriptor `fd`. */
function inAnEpollSet(fd: number): boolean {
  return epollRegistrations().some((line) => new RegExp(`^tfd:\\s+${fd}\\s`).test(line))
}

/** The inode of the socket descriptor `fd` names. */
function socketInode(fd: number): number {
  return Number(/^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))![1])
}

/** Whether any epoll set of this process watches the socket with inode `inode`, by whatever descriptor number (or none left). */
function inodeInAnEpollSet(inode: number): boolean {
  const ino = new RegExp(`\\sino:${inode.toString(16)}(\\s|$)`)
  return epollRegistrations().some((line) => ino.test(line))
}

const collectGarbage = (): void => {
  setFlagsFromString('--expose-gc')
  ;(runInNewContext('gc') as () => void)()
}

t.test('a closed leg whose socket lives on elsewhere: the close costs no epoll_ctl, and its late events name no leg', async (t) => {
  // A relay that is connecting, made first: its target leg will take the slot freed below.
  const front = await connectedSocket(t)
  const events: number[][] = []
  const connecting = new binding.Relay(fdOf(front), {}, (kind: number, leg: number, errno: number) => events.push([kind, leg, errno]))
  t.teardown(() => {
    connecting.destroy(1)
    connecting.destroy(0)
  })
  // A target whose accept queue is full (a listener with backlog 0 that never accepts, and one
  // connection waiting) drops a new connection's SYN: that connect hangs.
  const full = spawn('python3', ['-c', 'import socket, sys\ns = socket.socket()\ns.bind(("127.0.0.1", 0))\ns.listen(0)\nprint(s.getsockname()[1], flush=True)\nsys.stdin.read()'], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => full.kill())
  const fullPort = Number((await once(full.stdout!, 'data'))[0].toString().trim())
  const fillers: Socket[] = []
  t.teardown(() => {
    for (const f of fillers) f.destroy()
  })

  // Node's copy of this client stays open: closing the pump's duplicate leaves the socket alive,
  // and its registration with it.
  const served: Socket[] = []
  const { server, port } = await listen((s) => served.push(s))
  t.teardown(() => server.close())
  const client = await connect(port)
  client.on('error', () => {})  // reset below, by its peer
  t.teardown(() => client.destroy())
  await waitFor(() => served.length === 1, 2000)
  let relay: NativeRelay | undefined = new binding.Relay(fdOf(client), {}, () => {})
  const dup = relay.fd(0)
  const inode = socketInode(dup)
  t.ok(inAnEpollSet(dup), 'registered while open')
  relay.destroy(0)
  t.equal(relay.fd(0), -1)
  t.ok(inodeInAnEpollSet(inode), 'the registration outlives the closed leg: the close made no epoll_ctl')
  // The relay is freed: under the old rule (epoll data = the leg's address) an event on the stale
  // registration handed back freed memory (AddressSanitizer: heap-use-after-free).
  relay = undefined
  collectGarbage()
  await sleep(20)

  server.close()
  // Fill the accept queue (nobody accepts), then the connecting relay's target takes the slot.
  for (let i = 0; i < 2; i++) fillers.push(net.connect(fullPort, '127.0.0.1').on('error', () => {}))
  await sleep(100)
  t.equal(connecting.connect('127.0.0.1', fullPort, 4), null, 'the target connect is under way')
  await sleep(100)
  t.same(events, [], 'still connecting: no event yet')
  // The stale registration's socket is reset by its peer: EPOLLERR and EPOLLHUP. Dispatched to
  // the leg now in its slot, they would end that connect as a success (EPOLLERR with SO_ERROR 0).
  served[0]!.resetAndDestroy()
  await sleep(100)
  t.same(events, [], 'no leg got the stale registration\'s events')
  t.ok(connecting.fd(1) >= 0, 'the connecting leg is untouched')
  client.destroy()
  t.ok(await waitFor(() => !inodeInAnEpollSet(inode), 2000), 'gone with the last descriptor of its socket')
})

t.test('Relay arguments: descriptors, ports and families are checked, not wrapped', async (t) => {
  const socket = await connectedSocket(t)
  const fd = fdOf(socket)
  const Relay = binding.Relay
  for (const bad of [2 ** 32 + 1, 2 ** 32 + fd, NaN, Infinity, -1, 1.5]) {
    t.throws(() => new Relay(bad, {}, () => {}), { code: 'KA_NATIVE_ARG', name: 'RangeError' }, `fd ${bad} is refused`)
    t.throws(() => binding.getKeepalive(bad), { code: bad === -1 ? 'EBADF' : 'KA_NATIVE_ARG' }, `getKeepalive(${bad}) does not read another descriptor`)
  }
  t.throws(() => (Relay as unknown as (...a: unknown[]) => unknown)(fd, {}, () => {}), { code: 'KA_NATIVE_ARG', name: 'TypeError' }, 'Relay() without new')
  t.throws(() => new Relay(fd, 42 as unknown as object, () => {}), { code: 'KA_NATIVE_ARG' }, 'an owner that is not an object')
  const relay = new Relay(fd, {}, () => {})
  t.teardown(() => relay.destroy(0))
  for (const [port, family] of [[70000, 4], [0, 4], [-1, 4], [5432.5, 4], [NaN, 4], [5432, 5], [5432, 0]] as const) {
    t.throws(() => relay.connect('127.0.0.1', port, family), { code: 'KA_NATIVE_ARG', name: 'RangeError' }, `connect(port ${port}, family ${family}) is refused`)
  }
  const keepalive = CONNECT_KEEPALIVE
  for (const [flags, idle, interval, count, userTimeoutMs, what] of [[4, 1, 1, 1, 0, 'flags'], [keepalive, 0, 1, 1, 0, 'idle'], [keepalive, 1, 32768, 1, 0, 'interval'], [keepalive, 1, 1, 128, 0, 'count'], [keepalive, 1, 1, 1, -1, 'user timeout'], [keepalive, 1.5, 1, 1, 0, 'idle']] as const) {
    t.throws(() => relay.connect('127.0.0.1', 5432, 4, flags, idle, interval, count, userTimeoutMs), { code: 'KA_NATIVE_ARG', name: 'RangeError', message: new RegExp(what) }, `connect's ${what} out of range is refused`)
  }
  t.throws(() => relay.connect('127.0.0.1', 5432, 4, keepalive), { code: 'KA_NATIVE_ARG', message: /idle/ }, 'CONNECT_KEEPALIVE without the options')
  t.equal(relay.connect('not-an-address', 5432, 4), 'EINVAL', 'a name where a numeric address belongs fails the connect, not the caller')
  t.equal(relay.connect('fe80::1%ka-no-such-if', 5432, 6), 'ENXIO', 'an IPv6 zone that names no interface')
  relay.destroy(1)
  const file = openSync(new URL(import.meta.url), 'r')
  t.teardown(() => closeSync(file))
  t.throws(() => new Relay(file, {}, () => {}), { code: 'ENOTSOCK', syscall: 'setsockopt(SO_OOBINLINE)' }, 'the failing call is named')
})

t.test('connect with CONNECT_KEEPALIVE and CONNECT_START: the leg has the options at CONNECT, and bytes flow without start()', async (t) => {
  const targets: Socket[] = []
  const target = await listen((s) => void targets.push(s))
  // Node does not read the accepted client: the relay's duplicate is its only reader.
  const clients: Socket[] = []
  const front = net.createServer({ pauseOnConnect: true }, (s) => void clients.push(s))
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve))
  const app = await connect((front.address() as AddressInfo).port)
  await waitFor(() => clients.length === 1, 2000)
  let atConnect: unknown
  const relay = new binding.Relay(fdOf(clients[0]!), {}, (kind: number, _leg: number, errno: number) => {
    if (kind === 1) atConnect = { errno, ...binding.getKeepalive(relay.fd(1)) }
  })
  t.teardown(() => {
    relay.destroy(0)
    relay.destroy(1)
    for (const s of [app, ...clients, ...targets]) s.destroy()
    front.close()
    target.server.close()
  })
  app.write('sent before the connect')
  t.equal(relay.connect('127.0.0.1', target.port, 4, CONNECT_KEEPALIVE | CONNECT_START, 33, 4, 5, 53_000), null)
  t.ok(await waitFor(() => atConnect !== undefined && targets.length === 1, 2000), 'connected')
  t.same(atConnect, { errno: 0, enabled: true, idle: 33, interval: 4, count: 5, userTimeoutMs: 53_000 }, 'the options are on the leg as CONNECT is reported')
  const atTarget = collect(targets[0]!)
  t.ok(await waitFor(() => atTarget.length() === 23, 2000), 'what the client sent before the connect reaches the target, with no start()')
  t.equal(atTarget.data().toString(), 'sent before the connect')
})

/** Two sockets connected to a target the test drives, and their peers there. */
async function twoConnections(t: Test): Promise<{ sockets: [Socket, Socket]; peers: [Socket, Socket] }> {
  const peers: Socket[] = []
  const { server, port } = await listen((s) => void peers.push(s))
  const sockets: [Socket, Socket] = [await connect(port), await connect(port)]
  await waitFor(() => peers.length === 2, 2000)
  t.teardown(() => {
    for (const s of [...sockets, ...peers]) s.destroy()
    server.close()
  })
  return { sockets, peers: peers as [Socket, Socket] }
}

/** New descriptors for `fds`, received over a Unix socket as an upgrade receives them. */
function received(t: Test, fds: number[]): number[] {
  const [a, b] = binding.seqpacketPair()
  t.teardown(() => [a, b].forEach((fd) => binding.closeFd(fd)))
  binding.sendFds(a, Buffer.from('fds'), fds, 1000)
  return binding.recvFds(b, 64, 1000)!.fds
}

const openFds = (): number => readdirSync('/proc/self/fd').length
const isOpen = (fd: number): boolean => {
  try {
    fstatSync(fd)
    return true
  } catch {
    return false
  }
}

t.test('adopt, by a relay made with RELAY_OWN_FD: both descriptors are taken as they are, and given back untouched when it fails', async (t) => {
  const nothing = Buffer.alloc(0)
  const { sockets, peers } = await twoConnections(t)
  // Node's sockets stop reading (pause() alone still fills their buffer): the relay's legs are
  // other descriptors of the same sockets.
  for (const s of sockets) (s as unknown as { _handle: { readStop(): number } })._handle.readStop()
  const [client, target] = received(t, sockets.map(fdOf))
  const relay = new binding.Relay(client!, {}, () => {}, RELAY_OWN_FD)
  const before = openFds()
  relay.adopt(target!, [nothing, nothing], [0, 0], [0, 0])
  t.same([relay.fd(0), relay.fd(1)], [client, target], 'the relay holds the very descriptors it was given')
  t.equal(openFds(), before, 'no duplicate was made')
  relay.start()
  const atTarget = collect(peers[1])
  peers[0].write('through the adopted legs')
  t.ok(await waitFor(() => atTarget.length() === 24, 2000), 'bytes move between them')
  relay.destroy(0)
  relay.destroy(1)
  t.notOk(isOpen(client!) || isOpen(target!), 'closing the legs closed them: they were the relay\'s')

  // A target that is not a socket: adopt throws, and both are the caller's again.
  const again = await twoConnections(t)
  const [client2] = received(t, [fdOf(again.sockets[0])])
  const file = openSync(new URL(import.meta.url), 'r')
  t.teardown(() => [client2!, file].forEach((fd) => isOpen(fd) && closeSync(fd)))
  const failing = new binding.Relay(client2!, {}, () => {}, RELAY_OWN_FD)
  t.throws(() => failing.adopt(file, [nothing, nothing], [0, 0], [0, 0]), { code: 'ENOTSOCK' }, 'adopt fails on a descriptor that is not a socket')
  t.equal(failing.fd(0), -1, 'the relay let go of the client')
  failing.destroy(0)
  t.ok(isOpen(client2!) && isOpen(file), 'neither descriptor was closed')
  t.notOk(inAnEpollSet(client2!), 'the client is in no epoll set')
  const atPeer = collect(again.peers[0])
  const words = Buffer.from('still the caller\'s')
  writeSync(client2!, words)
  t.ok(await waitFor(() => atPeer.length() === words.length, 2000), 'the client socket works as before: no FIN, no RST')
})

t.test('a reader (RELAY_READER): reads into the buffer given, held in the kernel while paused, then the end; a dead socket is read to its end paused or not', async (t) => {
  const { sockets, peers } = await twoConnections(t)
  for (const s of sockets) (s as unknown as { _handle: { readStop(): number } })._handle.readStop()
  const into = Buffer.alloc(64 * 1024)
  const events: Array<[number, number, string]> = []
  const onEvent = (kind: number, _leg: number, n: number): void => void events.push([kind, n, kind === EV_DATA ? into.toString('latin1', 0, n) : ''])
  const Relay = binding.Relay
  t.throws(() => new Relay(fdOf(sockets[0]), {}, onEvent, RELAY_READER), { code: 'KA_NATIVE_ARG' }, 'a reader without a buffer')
  t.throws(() => new Relay(fdOf(sockets[0]), {}, onEvent, RELAY_READER, Buffer.alloc(0)), { code: 'KA_NATIVE_ARG' }, 'an empty buffer')
  t.throws(() => new Relay(fdOf(sockets[0]), {}, onEvent, RELAY_READER, Buffer.alloc(17 << 20)), { code: 'KA_NATIVE_ARG', name: 'RangeError' }, 'a buffer over 16 MiB')
  const other = await twoConnections(t)
  const plain = new Relay(fdOf(other.sockets[0]), {}, () => {})
  t.throws(() => plain.pause(), { code: 'KA_NATIVE_STATE' }, 'a relay is no reader: it does not pause')
  plain.destroy(0)

  const reader = new Relay(fdOf(sockets[0]), {}, onEvent, RELAY_READER, into)
  const duplicate = reader.fd(0)
  const inode = socketInode(duplicate)
  t.ok(duplicate !== fdOf(sockets[0]) && inode === socketInode(fdOf(sockets[0])), 'it reads a duplicate of the descriptor')
  const watched = (): boolean => epollRegistrations().some((line) => new RegExp(`^tfd:\\s+${duplicate}\\s.*\\sino:${inode.toString(16)}(\\s|$)`).test(line))
  t.ok(watched(), 'in the pump\'s epoll set')
  peers[0].write('while paused')
  await sleep(100)
  t.same(events, [], 'made paused: nothing is read')
  reader.start()
  t.ok(await waitFor(() => events.length === 1, 2000), 'start() reads')
  t.same(events.shift(), [EV_DATA, 12, 'while paused'], 'the read is told by its length, its bytes in the buffer given')
  reader.pause()
  peers[0].write('held')
  await sleep(100)
  t.same(events, [], 'paused again: held')
  reader.start()
  t.ok(await waitFor(() => events.length === 1, 2000))
  t.same(events.shift(), [EV_DATA, 4, 'held'])
  peers[0].end('last words')
  t.ok(await waitFor(() => events.length === 2, 2000), 'the FIN is read')
  t.same(events.splice(0), [[EV_DATA, 10, 'last words'], [EV_EOF, 0, '']], 'the last bytes, then the end of stream')
  reader.destroy(0)
  t.notOk(isOpen(duplicate), 'destroy(0) closed the duplicate')
  t.notOk(watched(), 'and took it out of the epoll set first (the socket lives on: Node\'s, and a relay\'s close would leave it listed)')
  const atPeer = collect(peers[0])
  sockets[0].write('the socket is Node\'s still')
  t.ok(await waitFor(() => atPeer.length() === 26, 2000), 'and the socket works as before: no FIN, no RST from the reader')

  // A reset while paused: what had arrived is read all the same, then the error.
  const dead = new Relay(fdOf(sockets[1]), {}, onEvent, RELAY_READER, into)
  peers[1].write('before the reset')
  await sleep(50)
  peers[1].resetAndDestroy()
  t.ok(await waitFor(() => events.length === 2, 2000), 'the dead socket is read though paused')
  t.same(events.splice(0), [[EV_DATA, 16, 'before the reset'], [EV_ERROR, 104, '']], 'every byte it had received, then ECONNRESET')
  dead.destroy(0)
})

t.test('pump callbacks run in an async context (the pump\'s), and what they queue runs when the dispatch ends', async (t) => {
  // In a child with nothing else to do: any other callback of the loop (a socket's, a timer's)
  // would run the ticks too. The relay's connect is refused, so its one event is an ERROR; a
  // timer then looks at what ran. Without the dispatch's callback scope the callback runs in no
  // async context (id 0).
  const script = `
    const net = require('node:net')
    const { executionAsyncId } = require('node:async_hooks')
    const { Relay } = require(${JSON.stringify(ADDON)})
    const closed = net.createServer().listen(0, '127.0.0.1', () => {
      const refused = closed.address().port
      closed.close(() => {
        const server = net.createServer(() => {}).listen(0, '127.0.0.1', () => {
          const client = net.connect(server.address().port, '127.0.0.1', () => {
            const order = []
            const relay = new Relay(client._handle.fd, {}, (kind) => {
              order.push('event ' + kind, executionAsyncId() > 0 ? 'in an async context' : 'in none')
              queueMicrotask(() => order.push('microtask'))
              process.nextTick(() => order.push('next tick'))
            })
            setTimeout(() => {
              console.log(JSON.stringify(order))
              process.exit(0)
            }, 500)
            relay.connect('127.0.0.1', refused, 4)
          })
        })
      })
    })`
  const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000 })
  t.same(JSON.parse(out), ['event 3', 'in an async context', 'next tick', 'microtask'], 'the ERROR in an async context, then its next tick and microtask, before the timer')
})

t.test('an exception thrown by the pump callback fails that relay: both peers reset, descriptors freed', async (t) => {
  // In a child: the exception is uncaught there on purpose.
  const script = `
    const net = require('node:net')
    const { Relay } = require(${JSON.stringify(ADDON)})
    process.on('uncaughtException', (err) => console.log('uncaught', err.message))
    const target = net.createServer((s) => { s.on('error', (e) => console.log('target', e.code)); s.end('bye') }).listen(0, '127.0.0.1', () => {
      const front = net.createServer((c) => {
        const relay = new Relay(c._handle.fd, {}, () => { throw new Error('handler bug') })
        c._handle.close()
        relay.connect('127.0.0.1', target.address().port, 4)
        setTimeout(() => { console.log('fds', relay.fd(0), relay.fd(1)); process.exit(0) }, 300)
      }).listen(0, '127.0.0.1', () => {
        const client = net.connect(front.address().port, '127.0.0.1')
        client.on('error', (e) => console.log('client', e.code))
      })
    })`
  const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000 })
  t.match(out, /uncaught handler bug/, 'the exception is surfaced once')
  t.match(out, /client ECONNRESET/, 'the client is reset')
  t.match(out, /fds -1 -1/, 'both legs closed')
})

t.test('worker threads: each thread relays through a pump of its own; a worker exit does not break another', async (t) => {
  const script = `
    const { Worker } = require('node:worker_threads')
    const net = require('node:net')
    const addon = ${JSON.stringify(ADDON)}
    const inWorker = (code, port) => new Promise((resolve) => {
      const w = new Worker(code, { eval: true, workerData: { addon, port } })
      w.on('message', (m) => console.log('worker:', m))
      w.on('error', (e) => console.log('worker error:', e.message))
      w.on('exit', resolve)
    })
    // A worker that exits closes its sessions: the echo server may see a reset.
    const echo = net.createServer((s) => { s.on('error', () => {}); s.pipe(s) })
    echo.listen(0, '127.0.0.1', async () => {
      // A worker uses the pump first, then exits.
      await inWorker(\`
        const { parentPort, workerData } = require('node:worker_threads')
        const net = require('node:net')
        const { Relay, getKeepalive } = require(workerData.addon)
        const s = net.createServer().listen(0, '127.0.0.1', () => {
          const c = net.connect(s.address().port, '127.0.0.1', () => {
            const relay = new Relay(c._handle.fd, {}, () => {})
            relay.destroy(0)
            parentPort.postMessage('relay made and closed; keepalive read ' + typeof getKeepalive(c._handle.fd))
            c.destroy(); s.close()
          })
        })\`)
      // The main thread makes its own pump and relays through it.
      const { Relay } = require(addon)
      const front = net.createServer((c) => {
        const relay = new Relay(c._handle.fd, {}, function (kind) { if (kind === 1) relay.start() })
        c._handle.close()
        relay.connect('127.0.0.1', echo.address().port, 4)
      }).listen(0, '127.0.0.1', () => {
        const client = net.connect(front.address().port, '127.0.0.1', () => client.write('ping'))
        client.once('data', async (d) => {
          console.log('main relayed', d.toString())
          // Now a worker relays through its own pump while the main thread's is in use.
          await inWorker(\`
            const { parentPort, workerData } = require('node:worker_threads')
            const net = require('node:net')
            const { Relay } = require(workerData.addon)
            const front = net.createServer((c) => {
              const relay = new Relay(c._handle.fd, {}, function (kind) { if (kind === 1) relay.start() })
              c._handle.close()
              relay.connect('127.0.0.1', workerData.port, 4)
            }).listen(0, '127.0.0.1', () => {
              const client = net.connect(front.address().port, '127.0.0.1', () => client.write('pong'))
              client.once('data', (d) => { parentPort.postMessage('relayed ' + d); process.exit(0) })
            })\`, echo.address().port)
          client.write('again')
          client.once('data', (d) => { console.log('main relayed', d.toString()); process.exit(0) })
        })
      })
    })`
  const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 })
  t.match(out, /worker: relay made and closed; keepalive read object/, 'a worker may use the pump and the socket options')
  t.match(out, /main relayed ping/, 'after that worker exited, the main thread relays through the pump')
  t.match(out, /worker: relayed pong/, 'a second thread relays through a pump of its own while the main thread holds one')
  t.match(out, /main relayed again/, 'and the main thread\'s pump relays on after that worker exited')
})
