// socat, one forked child per connection, keepalive set on both addresses and, when asked,
// TCP_USER_TIMEOUT through a raw setsockopt (IPPROTO_TCP = 6, TCP_USER_TIMEOUT = 18): socat
// has no option of its own for it. It has no upgrade of its own: a new release means a restart,
// the old process stopped (SIGTERM) and a new one started; what becomes of the children serving
// the sessions is socat's doing (those still running are kept track of).

import { targetAcross, type KeepaliveSettings, type Relay, type RelayConfig } from './relay.ts'
import { labGeneration, missingCommand, startCommandRelay, strayGeneration, type Upgrade } from './command.ts'
import { processTree } from '../pids.ts'
import { waitForListening } from '../ss.ts'

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

const restart: Upgrade = async (ctx, generations) => {
  const old = generations.current
  const children = processTree(old.pid).slice(1)
  await old.stop()
  for (const pid of children) generations.add(strayGeneration(ctx.lab, pid))
  const proc = ctx.lab.spawn('client', 'socat', 'socat', socatArgs(ctx))
  await proc.readyWhen(waitForListening(ctx.lab.ns('client'), ctx.listen.port, 10_000, proc.pid), 'listening')
  return labGeneration(proc)
}

export const socat: Relay = {
  name: 'socat',
  proxies: true,
  unavailable: () => missingCommand('socat', ['-V'], 'socat'),
  async start(start) {
    // Its target is where the path across the NAT leads (through the box, when there is one).
    const ctx = await targetAcross(start)
    return await startCommandRelay(ctx, 'socat', 'socat', socatArgs(ctx), restart)
  },
  upgradeHow: () => 'restart: SIGTERM, then a new process'
}
