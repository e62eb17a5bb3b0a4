// Socket state as the kernel reports it (`ss`), to check what the proxy really holds.

import { execFileSync } from 'node:child_process'

/** `ss -Htnoi` lines (with keepalive timers) for TCP sockets matching a filter, minus TIME-WAIT. */
export function ssLines(filter: string, netns?: string): string[] {
  const args = ['-Htnoi', 'state', 'all', filter]
  const out = netns
    ? execFileSync('ip', ['netns', 'exec', netns, 'ss', ...args], { encoding: 'utf8' })
    : execFileSync('ss', args, { encoding: 'utf8' })
  // With -i, each socket's info continues on an indented line; join them.
  const joined = out.replace(/\n\s+(?=\S)/g, ' ')
  return joined.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('TIME-WAIT'))
}

/** Open sockets of a proxy: client legs (local port = proxy port) and target legs (remote port = target). */
export function proxySockets(proxyPort: number, targetPort: number): string[] {
  return ssLines(`( sport = :${proxyPort} or dport = :${targetPort} )`).filter((l) => !l.startsWith('LISTEN'))
}
