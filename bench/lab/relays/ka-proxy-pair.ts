// Two ka-proxies in paired mode: the near end in the client namespace (the app's sidecar, a plain
// listener whose sessions travel over a pair link) and the far end in the server namespace next
// to the server (accepting the link, relaying each session to the target over loopback). What
// crosses the NAT, and the box on the path when the lab has one, is the link alone. Both ends get
// the same keepalive settings; `pairHeartbeat` and `resumeWindow` are the pair's own.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Relay, RelayStart, RunningRelay } from './relay.ts'
import { across } from './relay.ts'
import { DEFAULT_ENTRY, KaProxyGenerations, kaProxySettingArgs, kaProxyUnavailable, parseJson, sessionLines, startKaProxy } from './ka-proxy.ts'
import type { LabProcess } from '../process.ts'
import type { Endpoint } from '../ss.ts'
import { DEFAULTS } from '../../../src/config/options.ts'

/** The far end's pair port is the target's port plus this, on the server's address. */
const PAIR_PORT_OFFSET = 1000

/**
 * How long each end has to exit after SIGTERM: its whole drain and then some. Sessions whose link
 * is down when a scenario ends (the server cut off, which cuts the link too) cannot end before a
 * link is back: the near end's client has gone, but its FIN or reset reaches the far end only over
 * a link, and the near end, after a long cut, tries again only every few seconds (its backoff).
 * What is still open then waits out --shutdown-grace, then gets its FINs, and what still has
 * bytes on their way (data in flight when the link went) waits out --flush-timeout before its
 * reset (both left at their defaults here); one ka-proxy's sessions end with their clients.
 */
const STOP_GRACE_MS = (DEFAULTS.shutdownGrace + DEFAULTS.flushTimeout + 5) * 1000

export interface PairEnds {
  near: LabProcess
  far: LabProcess
  /** Where the far end accepts links (before the path). */
  pairListen: Endpoint
}

export interface RunningPair extends RunningRelay {
  ends: PairEnds
}

export async function startPair(ctx: RelayStart, entry = DEFAULT_ENTRY): Promise<RunningPair> {
  const secret = join(ctx.lab.tempDir('pair'), 'pair.key')
  writeFileSync(secret, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 })
  const settings = [...kaProxySettingArgs(ctx.options), '--pair-secret-file', secret]
  const pairListen = { host: ctx.lab.addresses.server, port: ctx.target.port + PAIR_PORT_OFFSET }
  const far = await startKaProxy(ctx.lab, 'server', [
    '--pair-listen', `${pairListen.host}:${pairListen.port}`, '--target', `127.0.0.1:${ctx.target.port}`, ...settings
  ], entry)
  const link = await across(ctx, pairListen)
  let near: LabProcess
  try {
    near = await startKaProxy(ctx.lab, 'client', [
      '--listen', `${ctx.listen.host}:${ctx.listen.port}`, '--pair-connect', `${link.host}:${link.port}`, ...settings
    ], entry)
  } catch (err) {
    await far.stop()
    throw err
  }
  const nearGenerations = new KaProxyGenerations(ctx.lab, near, STOP_GRACE_MS)
  const farGenerations = new KaProxyGenerations(ctx.lab, far, STOP_GRACE_MS)
  return {
    address: ctx.listen,
    ends: { near, far, pairListen },
    // The near end's processes: the workbench counts sockets in the client namespace.
    async pids() { return nearGenerations.pids() },
    sessionLog() {
      return [...sessionLines(near).map(l => ({ ...l, end: 'near' })), ...sessionLines(far).map(l => ({ ...l, end: 'far' }))]
    },
    linkDowns: () => near.lines.map(parseJson).filter(l => l?.msg === 'pair link down').length,
    // As an operator upgrades the two hosts: one end, then the other.
    async upgrade() {
      await nearGenerations.upgrade()
      await farGenerations.upgrade()
    },
    oldGenerationRunning: () => nearGenerations.oldRunning() || farGenerations.oldRunning(),
    async stop() {
      const clean = await Promise.all([nearGenerations.stop(), farGenerations.stop()])
      if (clean.some(c => !c)) throw new Error(`ka-proxy pair did not stop cleanly on SIGTERM (near ${clean[0] ? 'clean' : 'not clean'}, far ${clean[1] ? 'clean' : 'not clean'}): ${near.stderr.trim().slice(-300)} ${far.stderr.trim().slice(-300)}\nnear: ${near.lines.slice(-6).join('\n')}\nfar: ${far.lines.slice(-6).join('\n')}`)
    }
  }
}

export function kaProxyPair(entry = DEFAULT_ENTRY): Relay {
  return {
    name: 'ka-proxy-pair',
    proxies: true,
    unavailable: async () => kaProxyUnavailable(entry),
    start: ctx => startPair(ctx, entry),
    upgradeHow: () => 'SIGUSR2 to the near end, then to the far end: listeners, sessions and pair links handed over'
  }
}
