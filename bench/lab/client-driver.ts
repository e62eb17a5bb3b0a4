// The app of the lab, run inside the client namespace next to the relay (a sidecar):
//   node --import tsx bench/lab/client-driver.ts
// Plain sockets with the kernel's defaults (no keepalive), as a naive app would have. It takes
// JSON commands on stdin and answers on stdout, one line each:
//   {"id":1,"op":"open","group":"ka-proxy/idle","host":"127.0.0.1","port":15001,"count":50,"timeoutMs":5000}
//   {"id":2,"op":"ping","group":"ka-proxy/idle","timeoutMs":3000}   (echo round trip per session:
//        ok; garbled: it came, but what came back so far is not exactly what was written; timeout; closed)
//   {"id":3,"op":"send","group":"ka-proxy/idle","text":"x\n"}      (write, do not wait)
//   {"id":4,"op":"destroy","group":"ka-proxy/idle"}
// and prints {"ev":"close","tag":...,"how":"fin"|"rst"|"error:CODE","t":ms} when a relay or
// server ends a session: "how" is what the app saw.

import net, { type Socket } from 'node:net'
import { createInterface } from 'node:readline'

interface Session {
  tag: string
  socket: Socket
  received: string
  /** Written and not yet echoed: what must come back next, in this order. */
  unechoed: string
  /** Something came back that was not the next of what was written (lost, repeated, reordered). */
  garbled: boolean
  closed: boolean
  onReceive: (() => void) | null
}

interface Command {
  id: number
  op: 'open' | 'ping' | 'send' | 'destroy'
  group: string
  host?: string
  port?: number
  count?: number
  timeoutMs?: number
  text?: string
}

const groups = new Map<string, Session[]>()
let pingSeq = 0

function emit(event: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(event) + '\n')
}

function ended(session: Session, how: string): void {
  if (session.closed) return
  session.closed = true
  emit({ ev: 'close', tag: session.tag, how, t: Date.now() })
  session.onReceive?.()
}

/** Resolves true once `expected` has arrived, false on timeout or close. Consumes it. */
function expect(session: Session, expected: string, timeoutMs: number): Promise<boolean> {
  return new Promise(resolve => {
    const check = (): void => {
      const at = session.received.indexOf(expected)
      if (at >= 0) {
        session.received = session.received.slice(at + expected.length)
        finish(true)
      } else if (session.closed) {
        finish(false)
      }
    }
    const timer = setTimeout(() => finish(false), timeoutMs)
    const finish = (ok: boolean): void => {
      clearTimeout(timer)
      session.onReceive = null
      resolve(ok)
    }
    session.onReceive = check
    check()
  })
}

/** Writes `text` on the session; the echo server sends it back, checked as it comes. */
function write(session: Session, text: string): void {
  session.unechoed += text
  session.socket.write(text)
}

function openOne(tag: string, host: string, port: number, timeoutMs: number): Promise<Session | string> {
  const socket = net.connect({ host, port })
  const session: Session = { tag, socket, received: '', unechoed: '', garbled: false, closed: false, onReceive: null }
  socket.setEncoding('latin1')
  socket.on('data', (chunk: string) => {
    if (!session.unechoed.startsWith(chunk)) session.garbled = true
    session.unechoed = session.unechoed.slice(chunk.length)
    session.received += chunk
    session.onReceive?.()
  })
  socket.on('end', () => ended(session, 'fin'))
  socket.on('error', (err: NodeJS.ErrnoException) => ended(session, err.code === 'ECONNRESET' ? 'rst' : `error:${err.code ?? 'unknown'}`))
  write(session, `${tag}\n`)
  return expect(session, `${tag}\n`, timeoutMs).then(ok => {
    if (ok) return session
    socket.destroy()
    return session.closed ? 'closed' : 'timeout'
  })
}

async function open(cmd: Command): Promise<Record<string, unknown>> {
  const count = cmd.count ?? 1
  const results = await Promise.all(Array.from({ length: count }, (_, i) =>
    openOne(`${cmd.group}/${i}`, cmd.host ?? '127.0.0.1', cmd.port ?? 0, cmd.timeoutMs ?? 5000)))
  const sessions = results.filter((r): r is Session => typeof r !== 'string')
  groups.set(cmd.group, [...(groups.get(cmd.group) ?? []), ...sessions])
  return { opened: sessions.length, failed: results.filter(r => typeof r === 'string') }
}

async function ping(cmd: Command): Promise<Record<string, unknown>> {
  const sessions = groups.get(cmd.group) ?? []
  const results: Record<string, string> = {}
  await Promise.all(sessions.map(async s => {
    if (s.closed) {
      results[s.tag] = 'closed'
      return
    }
    pingSeq += 1
    const token = `ping-${pingSeq}\n`
    write(s, token)
    const ok = await expect(s, token, cmd.timeoutMs ?? 3000)
    results[s.tag] = ok ? (s.garbled ? 'garbled' : 'ok') : s.closed ? 'closed' : 'timeout'
  }))
  return { results }
}

function send(cmd: Command): Record<string, unknown> {
  for (const s of groups.get(cmd.group) ?? []) {
    if (!s.closed) write(s, cmd.text ?? 'x\n')
  }
  return { t: Date.now() }
}

function destroy(cmd: Command): Record<string, unknown> {
  const sessions = groups.get(cmd.group) ?? []
  for (const s of sessions) {
    s.closed = true
    s.socket.destroy()
  }
  groups.delete(cmd.group)
  return { destroyed: sessions.length }
}

async function handle(cmd: Command): Promise<Record<string, unknown>> {
  switch (cmd.op) {
    case 'open': return await open(cmd)
    case 'ping': return await ping(cmd)
    case 'send': return send(cmd)
    case 'destroy': return destroy(cmd)
  }
}

createInterface({ input: process.stdin }).on('line', line => {
  const cmd = JSON.parse(line) as Command
  handle(cmd).then(
    reply => emit({ re: cmd.id, ...reply }),
    (err: Error) => emit({ re: cmd.id, error: err.message })
  )
})
emit({ ev: 'ready' })
