// HAProxy in TCP mode, with kernel keepalive on both legs (option clitcpka/srvtcpka and their
// idle/intvl/cnt settings) and, when asked, TCP_USER_TIMEOUT (tcp-ut) on both legs.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Relay, RelayConfig } from './relay.ts'
import { missingCommand, startCommandRelay } from './command.ts'

/** `maxconn`: sessions HAProxy accepts at once (the performance bench holds thousands). */
export function haproxyConfig({ listen, target, options }: RelayConfig, maxconn = 4000): string {
  const { client: c, target: t, userTimeout } = options
  const ut = userTimeout !== undefined && userTimeout > 0 ? ` tcp-ut ${userTimeout}s` : ''
  return `global
  maxconn ${maxconn}
defaults
  mode tcp
  timeout connect 5s
  timeout client 24h
  timeout server 24h
frontend relay
  bind ${listen.host}:${listen.port}${ut}
  option clitcpka
  clitcpka-idle ${c.idle}s
  clitcpka-intvl ${c.interval}s
  clitcpka-cnt ${c.count}
  default_backend server
backend server
  option srvtcpka
  srvtcpka-idle ${t.idle}s
  srvtcpka-intvl ${t.interval}s
  srvtcpka-cnt ${t.count}
  server s1 ${target.host}:${target.port}${ut}
`
}

export const haproxy: Relay = {
  name: 'haproxy',
  proxies: true,
  unavailable: () => missingCommand('haproxy', ['-v'], 'haproxy'),
  async start(ctx) {
    const file = join(ctx.lab.tempDir('haproxy'), 'haproxy.cfg')
    writeFileSync(file, haproxyConfig(ctx))
    return await startCommandRelay(ctx, 'haproxy', 'haproxy', ['-db', '-f', file])
  }
}
