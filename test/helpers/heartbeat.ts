// Peers for the heartbeat tests: targets that say who they are, servers that never
// answer or answer garbage, a listener whose accept queue is full, and one check run
// through a real scheduler (so timeouts are the scheduler's, as in the proxy).

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import http from 'node:http'
import net, { type Socket } from 'node:net'
import { createInterface } from 'node:readline'
import type { Test } from 'tap'
import type { CheckSpec } from '../../src/config/heartbeat.ts'
import { createChecker } from '../../src/heartbeat/registry.ts'
import { HeartbeatScheduler, type CheckOutcome } from '../../src/heartbeat/scheduler.ts'
import { endOf, listen } from './net.ts'

/** Runs one check of 127.0.0.1:`port` with `timeoutMs`, as the proxy's scheduler would. */
export async function checkOnce(spec: CheckSpec, port: number, timeoutMs = 500): Promise<CheckOutcome> {
  const checker = createChecker(spec)
  const scheduler = new HeartbeatScheduler()
  const outcome = await new Promise<CheckOutcome>((resolve) => {
    const stop = scheduler.add({
      intervalMs: 60_000,
      timeoutMs,
      run: (signal) => checker.check({ host: '127.0.0.1', port }, signal),
      report: (o) => {
        stop()
        resolve(o)
      },
    })
  })
  await checker.close?.()
  return outcome
}

/** A server whose accepted sockets `onSocket` drives; every socket is destroyed at teardown. */
export async function server(t: Test, onSocket: (s: Socket) => void): Promise<{ port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>()
  const { server, port } = await listen((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
    onSocket(s)
  })
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return { port, sockets }
}

/** A target that names itself: writes `name\n` on connect, then echoes what it gets. */
export function namedTarget(t: Test, name: string): Promise<{ port: number; sockets: Set<Socket> }> {
  return server(t, (s) => {
    s.write(`${name}\n`)
    s.pipe(s)
  })
}

/** Connects to the proxy; resolves with the target's name, or the error code if refused (ECONNRESET). */
export async function whereTo(port: number): Promise<{ socket: Socket; name: string }> {
  const socket = net.connect({ port, host: '127.0.0.1' })
  const name = await new Promise<string>((resolve) => {
    let text = ''
    const onData = (c: Buffer): void => {
      text += c.toString()
      const end = text.indexOf('\n')
      if (end < 0) return
      socket.off('data', onData)
      resolve(text.slice(0, end))
    }
    socket.on('data', onData)
    void endOf(socket).then(resolve)
  })
  return { socket, name }
}

/**
 * A listening socket nobody accepts from, with its accept queue full: a connect to it
 * gets no SYN-ACK, so it hangs until the caller gives up. (A child process blocked right
 * after listen(), backlog 1, filled by the connections made here.)
 */
export async function fullListener(t: Test): Promise<number> {
  const code = `const s = require('net').createServer(); s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
    process.stdout.write(s.address().port + '\\n'); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0) })`
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => child.kill('SIGKILL'))
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string]
  const port = Number(line)
  const fillers: Socket[] = []
  for (let i = 0; i < 4; i++) fillers.push(net.connect({ port, host: '127.0.0.1' }).on('error', () => {}))
  t.teardown(() => fillers.forEach((s) => s.destroy()))
  await new Promise((r) => setTimeout(r, 100))
  return port
}

interface Timing {
  interval: number
  timeout: number
  fall: number
  rise: number
}

/** What the tests allow on top of the README's bounds: timer and scheduling delay on a loaded machine. */
export const HEARTBEAT_SLACK_MS = 300

/**
 * The README's promise, written out here rather than taken from the code under test: a
 * target that stops answering is marked down within interval × fall + timeout.
 */
export const downWithinMs = (hb: Timing): number => Math.round((hb.interval * hb.fall + hb.timeout) * 1000) + HEARTBEAT_SLACK_MS

/** A target answering again is marked up after `rise` good checks: within interval × rise + timeout. */
export const upWithinMs = (hb: Timing): number => Math.round((hb.interval * hb.rise + hb.timeout) * 1000) + HEARTBEAT_SLACK_MS

/** GET /<port> answers the status set for that port (200 unless set). */
export async function healthEndpoint(t: Test): Promise<{ port: number; status: Map<number, number> }> {
  const status = new Map<number, number>()
  const web = http.createServer((req, res) => {
    res.statusCode = status.get(Number(req.url!.slice(1))) ?? 200
    res.end()
  })
  web.listen(0, '127.0.0.1')
  await once(web, 'listening')
  t.teardown(() => {
    web.closeAllConnections()
    web.close()
  })
  return { port: (web.address() as { port: number }).port, status }
}
