// Starts a ProxyListener in this process, on 127.0.0.1 with a kernel-chosen port, with
// its log lines captured as parsed JSON so tests assert on fields.

import { Writable } from 'node:stream'
import { pino, type Logger } from 'pino'
import { resolveOptions, type RawOptions } from '../../src/config/options.ts'
import { SocketControl } from '../../src/socket-control.ts'
import { ProxyListener } from '../../src/listener.ts'
import type { SessionSummary } from '../../src/session.ts'
import type { TransportKind } from '../../src/transport/transport.ts'

export interface LogLine {
  msg: string
  level: number
  [key: string]: unknown
}

export interface TestProxy {
  listener: ProxyListener
  sockets: SocketControl
  port: number
  logs: LogLine[]
  /** Resolves with the next `n` session-closed lines (counting those already logged but not yet taken). */
  closed(n?: number): Promise<SessionSummary[]>
  stop(): Promise<void>
}

/** A debug-level logger whose lines are kept parsed in `logs`; `next()` resolves at the next line. */
export function capturedLogger(): { logger: Logger; logs: LogLine[]; next(): Promise<void> } {
  const logs: LogLine[] = []
  let waiters: Array<() => void> = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) {
        if (line) logs.push(JSON.parse(line) as LogLine)
      }
      const w = waiters
      waiters = []
      for (const wake of w) wake()
      done()
    },
  })
  return { logger: pino({ level: 'debug' }, sink), logs, next: () => new Promise<void>((r) => waiters.push(r)) }
}

/**
 * `relay`: the transport that moves the bytes (by default the native pump when the native
 * helper is in use, as in the proxy itself).
 */
export async function startProxy({ relay, ...raw }: Omit<RawOptions, 'listen'> & { target: string; relay?: TransportKind }): Promise<TestProxy> {
  const options = resolveOptions({ listen: '127.0.0.1:0', ...raw })
  const { logger, logs, next } = capturedLogger()
  let taken = 0
  const sockets = new SocketControl({ native: options.native })
  const listener = new ProxyListener(options, sockets, logger, {}, relay)
  const info = await listener.start()
  const closedLines = (): LogLine[] => logs.filter((l) => l.msg === 'session closed')
  return {
    listener,
    sockets,
    port: info.port,
    logs,
    async closed(n = 1) {
      while (closedLines().length < taken + n) await next()
      const lines = closedLines().slice(taken, taken + n)
      taken += n
      return lines as unknown as SessionSummary[]
    },
    stop: () => listener.stop(0),
  }
}
