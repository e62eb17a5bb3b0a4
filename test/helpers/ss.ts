// Socket state as the kernel reports it (`ss`), to check what the proxy really holds.
// Filtering is done here on the parsed columns rather than with ss's filter language.

import { execFileSync } from 'node:child_process'

export interface SsSocket {
  state: string
  local: string
  peer: string
  /** The rest of the line: timers (`timer:(keepalive,...)`), process, and -i details. */
  details: string
}

/** TCP sockets matching an ss filter (all when none), but TIME-WAIT ones (no longer held by any process). */
export function tcpSockets(filter: string[] = [], netns?: string): SsSocket[] {
  const args = ['-Htanoi', ...filter]
  const options = { encoding: 'utf8' as const, maxBuffer: 256 << 20 }
  const out = netns
    ? execFileSync('ip', ['netns', 'exec', netns, 'ss', ...args], options)
    : execFileSync('ss', args, options)
  // With -i, each socket's details continue on an indented line.
  return out
    .replace(/\n[ \t]+(?=\S)/g, ' ')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const [state = '', , , local = '', peer = '', ...rest] = l.trim().split(/\s+/)
      return { state, local, peer, details: rest.join(' ') }
    })
    .filter((s) => s.state !== 'TIME-WAIT')
}

const port = (address: string): number => Number(address.slice(address.lastIndexOf(':') + 1))

/** A proxy's sockets: client legs (local port = proxy port) and target legs (peer port = target port). */
export function proxySockets(proxyPort: number, targetPort: number): SsSocket[] {
  return tcpSockets([`( sport = :${proxyPort} or dport = :${targetPort} )`]).filter(
    (s) => s.state !== 'LISTEN' && (port(s.local) === proxyPort || port(s.peer) === targetPort),
  )
}
