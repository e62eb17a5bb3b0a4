// nginx stream proxy. Its client leg takes keepalive settings (listen so_keepalive=idle:intvl:cnt)
// but its target leg only turns keepalive on (proxy_socket_keepalive) with the kernel's
// defaults, two hours: which is the point of including it. It has no TCP_USER_TIMEOUT.

import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Relay, RelayConfig } from './relay.ts'
import { missingCommand, startCommandRelay } from './command.ts'

const STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so'

/** `workerConnections` counts sockets, two per session (the performance bench holds thousands). */
export function nginxConfig({ listen, target, options }: RelayConfig, dir: string, workerConnections = 4096): string {
  const c = options.client
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr notice;
load_module ${STREAM_MODULE};
events { worker_connections ${workerConnections}; }
stream {
  server {
    listen ${listen.host}:${listen.port} so_keepalive=${c.idle}s:${c.interval}s:${c.count};
    proxy_pass ${target.host}:${target.port};
    proxy_socket_keepalive on;
    proxy_timeout 24h;
  }
}
`
}

export const nginx: Relay = {
  name: 'nginx',
  proxies: true,
  async unavailable() {
    const missing = await missingCommand('nginx', ['-v'], 'nginx-light')
    if (missing !== null) return missing
    return existsSync(STREAM_MODULE) ? null : 'nginx stream module not installed (apt-get install -y libnginx-mod-stream)'
  },
  async start(ctx) {
    const dir = ctx.lab.tempDir('nginx')
    const file = join(dir, 'nginx.conf')
    writeFileSync(file, nginxConfig(ctx, dir))
    return await startCommandRelay(ctx, 'nginx', 'nginx', ['-p', dir, '-e', 'stderr', '-c', file])
  }
}
