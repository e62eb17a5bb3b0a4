// Two ka-proxy routes in this process joined by a pair link: a far end (pair listener relaying to
// a target) and a near end (a plain listener whose sessions travel over the link), each with its
// log lines captured, on loopback ports of the kernel's choosing.

import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import { resolveOptions, type RawOptions } from '../../src/config/options.ts'
import { SocketControl } from '../../src/socket-control.ts'
import { ProxyListener } from '../../src/listener.ts'
import { capturedLogger, type LogLine } from './proxy.ts'
import type { LinkEvents, PairLink } from '../../src/pair/link.ts'
import type { FrameType } from '../../src/pair/protocol.ts'

export interface PairEnd {
  listener: ProxyListener
  port: number
  logs: LogLine[]
  sockets: SocketControl
  /** Sessions resumed on a new link, as the listener's hook counted them (the metric's source). */
  resumes: number
  /** The session-closed lines so far. */
  closed(): LogLine[]
}

/** A secret file both ends read, removed with the process's temporary files. */
export function pairSecretFile(): string {
  const file = join(mkdtempSync(join(tmpdir(), 'ka-pair-')), 'pair.key')
  writeFileSync(file, `${'5a'.repeat(32)}\n`, { mode: 0o600 })
  return file
}

async function startEnd(t: Test, raw: RawOptions): Promise<PairEnd> {
  const options = resolveOptions(raw)
  const { logger, logs } = capturedLogger()
  const sockets = new SocketControl({ native: options.native })
  const counts = { resumes: 0 }
  const listener = new ProxyListener(options, sockets, logger, { pairResumed: () => counts.resumes++ })
  const { port } = await listener.start()
  t.teardown(() => listener.stop(0))
  return {
    listener,
    port,
    logs,
    sockets,
    get resumes() {
      return counts.resumes
    },
    closed: () => logs.filter((l) => l.msg === 'session closed'),
  }
}

/**
 * A far end relaying to `targetPort`, and a near end connecting to `farPort(far.port)` (the far
 * end itself, or a breakable path in front of it). `pairHeartbeat` and `resumeWindow` in seconds.
 */
export async function startPair(t: Test, targetPort: number, options: { pairHeartbeat?: number; resumeWindow?: number; secretFile?: string; through?: (farPort: number) => Promise<number> } = {}): Promise<{ near: PairEnd; far: PairEnd }> {
  const secret = options.secretFile ?? pairSecretFile()
  const common: RawOptions = { pairSecretFile: secret, pairHeartbeat: options.pairHeartbeat ?? 0.2, resumeWindow: options.resumeWindow ?? 60 }
  const far = await startEnd(t, { ...common, pairListen: '127.0.0.1:0', target: `127.0.0.1:${targetPort}` })
  const farPort = options.through === undefined ? far.port : await options.through(far.port)
  const near = await startEnd(t, { ...common, listen: '127.0.0.1:0', pairConnect: `127.0.0.1:${farPort}` })
  return { near, far }
}

/** What one end of a link saw. */
export class Recorder implements LinkEvents {
  up: PairLink[] = []
  down: Array<{ link: PairLink; reason: string }> = []
  control: Array<{ type: FrameType; channel: number; payload: Buffer }> = []
  data = new Map<number, Buffer[]>()
  /** Every DATA piece as it came: its channel and length, in order. */
  arrivals: Array<[channel: number, bytes: number]> = []
  onLinkUp(link: PairLink): void {
    this.up.push(link)
  }
  onLinkControl(_link: PairLink, type: FrameType, channel: number, payload: Buffer): void {
    this.control.push({ type, channel, payload: Buffer.from(payload) })
  }
  onLinkData(link: PairLink, channel: number, piece: Buffer): void {
    const pieces = this.data.get(channel) ?? []
    // Kept, not copied: a receiver that keeps a piece says so, and the link's next record then opens elsewhere.
    link.keepPiece()
    pieces.push(piece)
    this.data.set(channel, pieces)
    this.arrivals.push([channel, piece.length])
  }
  onLinkDown(link: PairLink, reason: string): void {
    this.down.push({ link, reason })
  }
  bytes(channel: number): Buffer {
    return Buffer.concat(this.data.get(channel) ?? [])
  }
}

