// The server application of the lab, run inside the server namespace:
//   node --import tsx bench/lab/echo-server.ts PORT [PORT...]
// It echoes every byte back. The first line a client sends is its tag (which session it is),
// so the events it prints as JSON lines can be matched to sessions even though the NAT hides
// the client's address:
//   {"ev":"listening","ports":[...]}
//   {"ev":"open","port":7001,"tag":"ka-proxy/idle/3","t":<ms>}
//   {"ev":"close","port":7001,"tag":"...","how":"fin"|"rst"|"error","t":<ms>}
// "how" is what this end saw: the peer's FIN, or its RST.

import net, { type Socket } from 'node:net'

interface Conn {
  port: number
  tag: string | null
  head: string
  closed: boolean
}

const conns = new Map<Socket, Conn>()

function emit(event: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ ...event, t: Date.now() }) + '\n')
}

function report(socket: Socket, how: string): void {
  const conn = conns.get(socket)
  if (conn === undefined || conn.closed) return
  conn.closed = true
  emit({ ev: 'close', port: conn.port, tag: conn.tag, how })
}

function onData(this: Socket, chunk: Buffer): void {
  this.write(chunk)
  const conn = conns.get(this)
  if (conn === undefined || conn.tag !== null) return
  conn.head += chunk.toString('latin1')
  const nl = conn.head.indexOf('\n')
  if (nl < 0) return
  conn.tag = conn.head.slice(0, nl)
  emit({ ev: 'open', port: conn.port, tag: conn.tag })
}

function onEnd(this: Socket): void {
  report(this, 'fin')
}

function onError(this: Socket, err: NodeJS.ErrnoException): void {
  report(this, err.code === 'ECONNRESET' ? 'rst' : `error:${err.code ?? 'unknown'}`)
}

function onClose(this: Socket): void {
  report(this, 'closed')
  conns.delete(this)
}

function listen(port: number): Promise<void> {
  const server = net.createServer(socket => {
    conns.set(socket, { port, tag: null, head: '', closed: false })
    socket.on('data', onData)
    socket.on('end', onEnd)
    socket.on('error', onError)
    socket.on('close', onClose)
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '0.0.0.0', resolve)
  })
}

const ports = process.argv.slice(2).map(Number)
await Promise.all(ports.map(listen))
emit({ ev: 'listening', ports })
