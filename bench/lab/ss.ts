// What sockets exist, in a lab namespace or in this one, read with `ss` as a person would check by
// hand: the state, both addresses, the keepalive/retransmit timer, and which processes hold the socket.

import { run, runIn } from './exec.ts'

export interface Endpoint {
  host: string
  port: number
}

export interface SocketInfo {
  state: string
  local: Endpoint
  peer: Endpoint
  /** Processes holding the socket; empty for an orphan the kernel is still closing. */
  pids: number[]
  /** `ss -o` timer, e.g. "keepalive,4.1sec,0" or "on,1.2sec,3". */
  timer: string | null
  /** Send-Q: bytes not yet acknowledged; for a LISTEN socket, its backlog. */
  sendQueue: number
}

function parseEndpoint(text: string): Endpoint {
  const colon = text.lastIndexOf(':')
  const host = text.slice(0, colon).replace(/^\[|\]$/g, '')
  return { host, port: Number(text.slice(colon + 1)) }
}

/** Parses `ss -tanpoH` output: one socket a line. */
export function parseSs(output: string): SocketInfo[] {
  const sockets: SocketInfo[] = []
  for (const line of output.split('\n')) {
    const fields = line.trim().split(/\s+/)
    if (fields.length < 5) continue
    const [state, , sendQueue, local, peer] = fields as [string, string, string, string, string]
    const rest = fields.slice(5).join(' ')
    sockets.push({
      state,
      local: parseEndpoint(local),
      peer: parseEndpoint(peer),
      pids: [...rest.matchAll(/pid=(\d+)/g)].map(m => Number(m[1])),
      timer: /timer:\(([^)]*)\)/.exec(rest)?.[1] ?? null,
      sendQueue: Number(sendQueue)
    })
  }
  return sockets
}

/**
 * TCP sockets (any state) with owners and timers, in namespace `ns` or, when null, in this
 * process's one; `filter` is an ss filter expression that narrows the listing, e.g.
 * `['( sport = :5432 )']`.
 */
export async function tcpSockets(ns: string | null, filter: readonly string[] = []): Promise<SocketInfo[]> {
  const args = ['-tanpoH', ...filter]
  const { stdout } = ns === null ? await run('ss', args) : await runIn(ns, 'ss', args)
  return parseSs(stdout)
}

const at = (e: Endpoint, { host, port }: Endpoint): boolean => e.host === host && e.port === port

/**
 * This namespace's sockets (any state) with `endpoint` as their local or peer address. The
 * host counts, not only the port: Linux routes all of 127.0.0.0/8 to lo, so the same port may
 * be in use on another loopback address.
 */
export async function socketsAt(endpoint: Endpoint): Promise<SocketInfo[]> {
  const sockets = await tcpSockets(null, [`( sport = :${endpoint.port} or dport = :${endpoint.port} )`])
  return sockets.filter(s => at(s.local, endpoint) || at(s.peer, endpoint))
}

/**
 * A relay's sockets in this namespace, seen by their addresses: client legs (local address
 * `listen`) and target legs (peer address `target`). Neither listening sockets nor TIME-WAIT
 * ones, which no process holds any more. Hosts count, as for `socketsAt`.
 */
export async function relaySockets(listen: Endpoint, target: Endpoint): Promise<SocketInfo[]> {
  const sockets = await tcpSockets(null, [`( sport = :${listen.port} or dport = :${target.port} )`])
  return sockets.filter(s => s.state !== 'LISTEN' && s.state !== 'TIME-WAIT' && (at(s.local, listen) || at(s.peer, target)))
}

/**
 * Sockets held by any of `pids`, not counting listening ones: what a relay still has open.
 * Orphans the kernel is still closing (FIN_WAIT, TIME_WAIT without an owner) are not held.
 */
export async function heldSockets(ns: string, pids: readonly number[]): Promise<SocketInfo[]> {
  if (pids.length === 0) return []
  const wanted = new Set(pids)
  return (await tcpSockets(ns)).filter(s => s.state !== 'LISTEN' && s.pids.some(p => wanted.has(p)))
}

/** Waits until something (or process `pid`) listens on `port` in `ns`: for relays that do not say when they are ready. */
export async function waitForListening(ns: string, port: number, timeoutMs: number, pid?: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    // With `pid`: until that process holds the listening socket (a relay's new generation).
    const { stdout } = await runIn(ns, 'ss', [pid === undefined ? '-tlnH' : '-tlnpH', `( sport = :${port} )`])
    if (pid === undefined ? stdout.trim() !== '' : stdout.includes(`pid=${pid},`)) return
    if (Date.now() > deadline) throw new Error(`${pid === undefined ? 'nothing listens' : `process ${pid} does not listen`} on port ${port} in ${ns} after ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}
