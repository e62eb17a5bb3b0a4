// HAProxy in TCP mode, with kernel keepalive on both legs (option clitcpka/srvtcpka and their
// idle/intvl/cnt settings) and, when asked, TCP_USER_TIMEOUT (tcp-ut) on both legs. Its own
// upgrade is the documented reload: a new process with -sf <old pid> (the old one stops
// accepting and finishes its sessions, for at most hard-stop-after) and -x <stats socket>, which
// takes the listening sockets over from the old process (expose-fd listeners), so none is closed.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { targetAcross, type Relay, type RelayConfig } from './relay.ts'
import { labGeneration, missingCommand, startCommandRelay, type Upgrade } from './command.ts'
import { waitForListening } from '../ss.ts'

/**
 * `maxconn`: sessions HAProxy accepts at once (the performance bench holds thousands);
 * `global`: more lines for its global section; `defaults`: more lines for its defaults.
 */
export function haproxyConfig({ listen, target, options }: RelayConfig, maxconn = 4000, global: readonly string[] = [], defaults: readonly string[] = []): string {
  const { client: c, target: t, userTimeout } = options
  const ut = userTimeout !== undefined && userTimeout > 0 ? ` tcp-ut ${userTimeout}s` : ''
  return `global
  maxconn ${maxconn}
${global.map(line => `  ${line}\n`).join('')}defaults
  mode tcp
${defaults.map(line => `  ${line}\n`).join('')}  timeout connect 5s
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

/** The reload: the new process takes the listeners through the old one's stats socket, then soft-stops it. */
function reload(file: string, socket: string): Upgrade {
  return async (ctx, generations) => {
    const proc = ctx.lab.spawn('client', 'haproxy', 'haproxy', ['-db', '-f', file, '-x', socket, '-sf', String(generations.current.pid)])
    await proc.readyWhen(waitForListening(ctx.lab.ns('client'), ctx.listen.port, 10_000, proc.pid), 'listening')
    return labGeneration(proc)
  }
}

export const haproxy: Relay = {
  name: 'haproxy',
  proxies: true,
  unavailable: () => missingCommand('haproxy', ['-v'], 'haproxy'),
  async start(start) {
    const ctx = await targetAcross(start)
    const dir = ctx.lab.tempDir('haproxy')
    const file = join(dir, 'haproxy.cfg')
    const socket = join(dir, 'stats.sock')
    const hardStop = ctx.options.hardStopAfter === undefined ? [] : [`hard-stop-after ${ctx.options.hardStopAfter}s`]
    writeFileSync(file, haproxyConfig(ctx, undefined, [`stats socket ${socket} mode 600 level admin expose-fd listeners`, ...hardStop]))
    return await startCommandRelay(ctx, 'haproxy', 'haproxy', ['-db', '-f', file], reload(file, socket))
  },
  upgradeHow: o => `reload: -x (listeners passed), -sf, hard-stop-after ${o.hardStopAfter === undefined ? 'none' : `${o.hardStopAfter} s`}`
}
