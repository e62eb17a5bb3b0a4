// A real redis-server on loopback (apt package redis-server), no persistence, and a
// minimal RESP client for talking to it through the proxy.

import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import net, { type Socket } from 'node:net'
import { freePort } from './net.ts'

export interface LocalRedis {
  port: number
  pid: number
  stop(): Promise<void>
}

/** Null when redis-server can be started here, else why not. */
export function redisMissing(): string | null {
  return spawnSync('redis-server', ['--version']).status === 0 ? null : 'redis-server not installed (apt-get install -y redis-server)'
}

export async function startRedis(extra: string[] = []): Promise<LocalRedis> {
  const port = await freePort()
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let log = ''
  proc.stdout!.on('data', (c: Buffer) => (log += c.toString()))
  const deadline = Date.now() + 10_000
  while (!/Ready to accept connections/.test(log)) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server did not start: ${log}`)
    await new Promise((r) => setTimeout(r, 20))
  }
  return {
    port,
    pid: proc.pid!,
    async stop() {
      if (proc.exitCode !== null) return
      proc.kill('SIGCONT')
      proc.kill('SIGKILL')
      await once(proc, 'exit')
    },
  }
}

/**
 * A RESP connection: `command` sends one command and resolves with its reply: a status or
 * error line as is (`+OK`, `-ERR ...`), a bulk string as its text. Rejects when the
 * connection fails or closes first.
 */
export interface RespClient {
  socket: Socket
  command(...args: string[]): Promise<string>
}

/** The first complete reply in `text`, and its length; undefined while incomplete. */
function parseReply(text: string): { value: string; length: number } | undefined {
  const end = text.indexOf('\r\n')
  if (end < 0) return undefined
  if (text[0] !== '$') return { value: text.slice(0, end), length: end + 2 }
  const size = Number(text.slice(1, end))
  if (size < 0) return { value: '(nil)', length: end + 2 }
  if (text.length < end + 2 + size + 2) return undefined
  return { value: text.slice(end + 2, end + 2 + size), length: end + 2 + size + 2 }
}

export async function respConnect(port: number): Promise<RespClient> {
  const socket = net.connect({ port, host: '127.0.0.1' })
  await once(socket, 'connect')
  let buffered = ''
  let waiting: { resolve: (value: string) => void; reject: (err: Error) => void } | undefined
  const fail = (err: Error): void => {
    waiting?.reject(err)
    waiting = undefined
  }
  socket.on('data', (c: Buffer) => {
    buffered += c.toString('latin1')
    const reply = parseReply(buffered)
    if (reply && waiting) {
      buffered = buffered.slice(reply.length)
      waiting.resolve(reply.value)
      waiting = undefined
    }
  })
  socket.on('error', fail)
  socket.on('end', () => fail(new Error('connection closed')))
  return {
    socket,
    command(...args) {
      return new Promise((resolve, reject) => {
        waiting = { resolve, reject }
        socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`)
      })
    },
  }
}
