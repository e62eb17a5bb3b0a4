// socat, one forked child per connection, keepalive set on both addresses and, when asked,
// TCP_USER_TIMEOUT through a raw setsockopt (IPPROTO_TCP = 6, TCP_USER_TIMEOUT = 18): socat
// has no option of its own for it.

import type { KeepaliveSettings, Relay, RelayConfig } from './relay.ts'
import { missingCommand, startCommandRelay } from './command.ts'

function keepalive(k: KeepaliveSettings): string {
  return `keepalive,keepidle=${k.idle},keepintvl=${k.interval},keepcnt=${k.count}`
}

export function socatArgs({ listen, target, options }: RelayConfig): string[] {
  const ut = options.userTimeout !== undefined && options.userTimeout > 0
    ? `,setsockopt-int=6:18:${options.userTimeout * 1000}`
    : ''
  return [
    `TCP-LISTEN:${listen.port},bind=${listen.host},reuseaddr,fork,backlog=1024,${keepalive(options.client)}${ut}`,
    `TCP:${target.host}:${target.port},${keepalive(options.target)}${ut}`
  ]
}

export const socat: Relay = {
  name: 'socat',
  proxies: true,
  unavailable: () => missingCommand('socat', ['-V'], 'socat'),
  async start(ctx) {
    return await startCommandRelay(ctx, 'socat', 'socat', socatArgs(ctx))
  }
}
