// Real loopback peers for the tests: servers on port 0, clients, and small waits.

import net, { type Server, type Socket } from 'node:net'
import type { Test } from 'tap'
import { once } from 'node:events'
import type { Endpoint } from '../../bench/lab/ss.ts'

export async function listen(onSocket: (s: Socket) => void, options: net.ServerOpts = {}): Promise<{ server: Server; port: number }> {
  const server = net.createServer({ allowHalfOpen: true, ...options }, onSocket)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, port: (server.address() as net.AddressInfo).port }
}

export { freePort } from '../../bench/lab/ports.ts'

export async function connect(port: number, host = '127.0.0.1'): Promise<Socket> {
  const socket = net.connect({ port, host, allowHalfOpen: true })
  await once(socket, 'connect')
  return socket
}

/** Reads until EOF; resolves with the bytes, or rejects with the socket's error (e.g. ECONNRESET). */
export function readAll(socket: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.once('end', () => resolve(Buffer.concat(chunks)))
    socket.once('error', reject)
  })
}

/** How a socket ended from our side's view: 'end' (FIN), or the error code (ECONNRESET for an RST). */
export function endOf(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    socket.once('end', () => resolve('end'))
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
    socket.resume()
  })
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `check` until it is true or `ms` pass; returns whether it became true. */
export async function waitFor(check: () => boolean | Promise<boolean>, ms: number, stepMs = 20): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check()) return true
    await sleep(stepMs)
  }
  return check()
}

/** A connected loopback socket (to a server that only accepts), closed when the test ends. */
export async function connectedSocket(t: { teardown(fn: () => void): void }): Promise<Socket> {
  const { server, port } = await listen(() => {})
  const socket = await connect(port)
  t.teardown(() => {
    socket.destroy()
    server.close()
  })
  return socket
}

/** A target whose accepted sockets the test drives by hand, in the order they arrive. */
export async function manualTarget(t: Test): Promise<{ port: number; next(): Promise<Socket> }> {
  const queue: Socket[] = []
  const waiting: Array<(s: Socket) => void> = []
  const { server, port } = await listen((s) => {
    s.on('error', () => {})
    const w = waiting.shift()
    if (w) w(s)
    else queue.push(s)
  })
  t.teardown(() => server.close())
  return {
    port,
    next: () => (queue.length ? Promise.resolve(queue.shift()!) : new Promise((r) => waiting.push(r))),
  }
}

/** An echo server (what it reads it writes back, ends when the client ends), closed when the test ends. */
export async function echoServer(t: { teardown(fn: () => void): void }): Promise<number> {
  const { server, port } = await listen((s) => {
    s.on('error', () => {}) // a reset from the proxy is part of some tests
    s.pipe(s)
  })
  t.teardown(() => server.close())
  return port
}

/** Sends `text` through a fresh connection, half-closes, and resolves with what came back. */
export async function echoOnce(port: number, text: string): Promise<string> {
  const c = await connect(port)
  const got = readAll(c)
  c.end(text)
  return (await got).toString()
}

/** Sends `text`, half-closes, and returns everything the peer wrote back. */
export async function echo(port: number, text: string): Promise<string> {
  const c = await connect(port)
  const got = readAll(c)
  c.end(text)
  return (await got).toString()
}

/** Gathers what `s` receives: how many bytes so far, and all of them. */
export function collect(s: Socket): { length(): number; data(): Buffer } {
  const chunks: Buffer[] = []
  let n = 0
  s.on('data', (c: Buffer) => {
    chunks.push(c)
    n += c.length
  })
  return { length: () => n, data: () => Buffer.concat(chunks) }
}

/** `port` on 127.0.0.1, where `listen` and the test proxies listen. */
export const loopback = (port: number): Endpoint => ({ host: '127.0.0.1', port })
