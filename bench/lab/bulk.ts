// A byte-exact bulk stream as seen from the bench (bench/lab/bulk-client.ts in the client
// namespace, through a relay to the echo server): how much came back when, and whether every
// byte came back exactly once and in order.

import type { Lab } from './lab.ts'
import type { LabProcess } from './process.ts'
import type { Endpoint } from './ss.ts'
import { spawnScript } from './node-script.ts'

export interface BulkResult {
  sent: number
  received: number
  /** Every byte sent came back, once, in order. */
  exact: boolean
  /** How the echo ended: "fin" when it ended normally. */
  how: string
}

export class BulkStream {
  readonly proc: LabProcess
  /** Bytes back so far, with the time they were counted (ms since epoch). */
  readonly progress: Array<{ received: number, t: number }> = []
  readonly result: Promise<BulkResult>

  constructor(proc: LabProcess) {
    this.proc = proc
    this.result = new Promise((resolve, reject) => {
      proc.on('line', (line: string) => {
        let ev: { ev?: string, received?: number, t?: number } & Partial<BulkResult>
        try { ev = JSON.parse(line) } catch { return }
        if (ev.ev === 'progress') this.progress.push({ received: ev.received ?? 0, t: ev.t ?? Date.now() })
        if (ev.ev === 'done') resolve({ sent: ev.sent ?? 0, received: ev.received ?? 0, exact: ev.exact === true, how: ev.how ?? '?' })
      })
      proc.once('exit', code => reject(new Error(`bulk client exited (${code}) before it was done: ${proc.stderr.trim().slice(-500)}`)))
    })
  }

  /** Bytes back by `t` (ms since epoch). */
  receivedBy(t: number): number {
    return this.progress.filter(p => p.t <= t).at(-1)?.received ?? 0
  }

  /** When more than `bytes` beyond what had come back by `t` had come back; null: not yet. */
  flowingAfter(t: number, bytes: number): number | null {
    const base = this.receivedBy(t)
    return this.progress.find(p => p.t > t && p.received > base + bytes)?.t ?? null
  }
}

/** Streams `bytesPerSecond` to `to` for `seconds` from the client namespace. */
export function startBulkStream(lab: Lab, to: Endpoint, seconds: number, bytesPerSecond: number): BulkStream {
  return new BulkStream(spawnScript(lab, 'client', 'bulk-client.ts', [to.host, String(to.port), String(seconds), String(bytesPerSecond)]))
}
