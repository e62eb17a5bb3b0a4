// The listen backlog: --backlog / `backlog:` sets it, the default is the system's most
// (net.core.somaxconn), and a listening socket handed over (upgrade) gets it set anew. Read back
// from the kernel with ss (Send-Q of a LISTEN socket is its backlog).

import { readFileSync } from 'node:fs'
import net, { type AddressInfo } from 'node:net'
import { once } from 'node:events'
import { pino } from 'pino'
import t from 'tap'
import { socketsAt } from '../bench/lab/index.ts'
import { resolveOptions } from '../src/config/options.ts'
import { ProxyListener } from '../src/listener.ts'
import { SocketControl } from '../src/socket-control.ts'
import { handleFd } from '../src/node-internals.ts'
import { loadNative } from '../src/native.ts'
import { loopback } from './helpers/net.ts'
import { startProxy } from './helpers/proxy.ts'

async function listenBacklog(port: number): Promise<number | undefined> {
  const listening = (await socketsAt(loopback(port))).filter((s) => s.state === 'LISTEN')
  return listening[0]?.sendQueue
}

/** A copy of `fd` under a new number, passed over a Unix socket as the upgrade passes it. */
function passed(fd: number): number {
  const load = loadNative()
  if (!load.ok) throw new Error(`the native helper is needed: ${load.reason}`)
  const [a, b] = load.binding.seqpacketPair()
  try {
    load.binding.sendFds(a, Buffer.from('l'), [fd], 1000)
    return load.binding.recvFds(b, 16, 1000)!.fds[0]!
  } finally {
    load.binding.closeFd(a)
    load.binding.closeFd(b)
  }
}

const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim())

t.test('--backlog sets the kernel backlog of the listening socket', async (t) => {
  const proxy = await startProxy({ target: '127.0.0.1:1', backlog: 7 })
  t.teardown(() => proxy.stop())
  t.equal(await listenBacklog(proxy.port), 7)
})

t.test('the default backlog is net.core.somaxconn, not Node\'s 511', async (t) => {
  const proxy = await startProxy({ target: '127.0.0.1:1' })
  t.teardown(() => proxy.stop())
  t.equal(await listenBacklog(proxy.port), somaxconn)
})

t.test('a listening socket handed over gets the backlog set anew', async (t) => {
  const old = net.createServer()
  old.listen({ host: '127.0.0.1', port: 0, backlog: 5 })
  await once(old, 'listening')
  const port = (old.address() as AddressInfo).port
  const options = resolveOptions({ listen: `127.0.0.1:${port}`, target: '127.0.0.1:1', backlog: 9 })
  const listener = new ProxyListener(options, new SocketControl(), pino({ level: 'silent' }))
  t.teardown(async () => {
    await listener.stop(0)
    old.close()
  })
  t.equal(await listenBacklog(port), 5, 'before: the old backlog')
  await listener.start(passed(handleFd(old)!))
  t.equal(await listenBacklog(port), 9, 'after: the new one')
})
