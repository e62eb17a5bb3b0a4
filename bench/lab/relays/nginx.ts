// nginx stream proxy. Its client leg takes keepalive settings (listen so_keepalive=idle:intvl:cnt)
// but its target leg only turns keepalive on (proxy_socket_keepalive) with the kernel's
// defaults, two hours: which is the point of including it. It has no TCP_USER_TIMEOUT. In the
// lab it runs as in production, a daemon (a master and a worker), so that it can upgrade itself
// the documented way: USR2 to the master starts a new master from the binary on disk with the
// listening sockets, then QUIT to the old master stops it gracefully (its worker finishes its
// sessions first, as long as they last: no worker_shutdown_timeout is set). A master that is
// not a daemon ignores USR2 while the process that started it lives, so the lab's must be one.

import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { targetAcross, type Relay, type RelayConfig } from './relay.ts'
import { commandPath, commandRelay, missingCommand, strayGeneration, type Upgrade } from './command.ts'
import { sleep } from '../exec.ts'
import { processTree, signalAll } from '../pids.ts'
import { waitForListening } from '../ss.ts'

const STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so'

/**
 * `workerConnections` counts sockets, two per session (the performance bench holds thousands);
 * `daemon`: a daemon, a master process and a worker (its own upgrade needs them), else one
 * process in the foreground.
 */
export function nginxConfig({ listen, target, options }: RelayConfig, dir: string, workerConnections = 4096, daemon = false): string {
  const c = options.client
  return `daemon ${daemon ? 'on' : 'off'};
master_process ${daemon ? 'on' : 'off'};
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
  async start(start) {
    const ctx = await targetAcross(start)
    const dir = ctx.lab.tempDir('nginx')
    const file = join(dir, 'nginx.conf')
    writeFileSync(file, nginxConfig(ctx, dir, undefined, true))
    // The command daemonizes: it exits once the master runs, which writes its pid file. The
    // master executes its argv[0] again on USR2: a full path, as an init system gives it.
    const launcher = ctx.lab.spawn('client', 'nginx', commandPath('nginx'), ['-p', dir, '-e', 'stderr', '-c', file])
    const code = await launcher.exited
    if (code !== 0) throw new Error(`nginx exited (${code}) instead of starting: ${launcher.stderr.trim().slice(-2000)}`)
    const master = Number(readFileSync(join(dir, 'nginx.pid'), 'utf8').trim())
    const first = strayGeneration(ctx.lab, master)
    await waitForListening(ctx.lab.ns('client'), ctx.listen.port, 10_000)
    return commandRelay(ctx, first, binaryUpgrade(dir))
  },
  upgradeHow: () => 'binary upgrade: USR2, then QUIT to the old master'
}

const UPGRADE_BOUND_MS = 10_000

/** USR2: the old master renames its pid file to .oldbin and starts the new master, which writes its own. */
function binaryUpgrade(dir: string): Upgrade {
  return async (ctx, generations) => {
    const old = generations.current.pid
    const pidFile = join(dir, 'nginx.pid')
    signalAll([old], 'SIGUSR2')
    const deadline = Date.now() + UPGRADE_BOUND_MS
    let pid = 0
    // Ready: the new master has written its pid and its worker holds the listening socket.
    for (;;) {
      const written = existsSync(`${pidFile}.oldbin`) && existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0
      if (written > 0 && written !== old) {
        pid = written
        const worker = processTree(pid)[1]
        if (worker !== undefined) {
          await waitForListening(ctx.lab.ns('client'), ctx.listen.port, UPGRADE_BOUND_MS, worker)
          break
        }
      }
      if (Date.now() > deadline) throw new Error(`nginx: no new master ${UPGRADE_BOUND_MS / 1000} s after USR2`)
      await sleep(50)
    }
    const next = strayGeneration(ctx.lab, pid)
    signalAll([old], 'SIGQUIT')
    return next
  }
}
