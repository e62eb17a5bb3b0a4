// The floor: the relay a Node programmer writes first, `pipe()` in both directions and nothing
// else (no keepalive, no half-close handling, no accounting).
//   node --import tsx bench/perf/pipe-relay.ts LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT

import net from 'node:net'

const [listenHost, listenPort, targetHost, targetPort] = process.argv.slice(2)

net.createServer(client => {
  const target = net.connect(Number(targetPort), targetHost)
  const close = (): void => {
    client.destroy()
    target.destroy()
  }
  client.on('error', close)
  target.on('error', close)
  client.pipe(target).pipe(client)
}).listen(Number(listenPort), listenHost)

process.on('SIGTERM', () => process.exit(0))
