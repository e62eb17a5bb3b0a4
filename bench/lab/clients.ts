// The app side as seen from the bench: commands to the client driver and the close events it
// reports. Each session is tagged "<group>/<index>"; a group is one relay in one scenario.

import type { Lab } from './lab.ts'
import type { LabProcess } from './process.ts'
import type { Endpoint } from './ss.ts'
import { spawnScript } from './node-script.ts'

export interface AppClose {
  tag: string
  /** What the app saw: "fin", "rst" or "error:CODE". */
  how: string
  t: number
}

/** "garbled": the echo came back after bytes that were not sent then (lost, duplicated or reordered ones). */
export type PingResult = 'ok' | 'garbled' | 'timeout' | 'closed'

interface Reply {
  re: number
  error?: string
  [key: string]: unknown
}

export class ClientDriver {
  readonly proc: LabProcess
  private readonly closeEvents = new Map<string, AppClose>()
  private readonly pending = new Map<number, (reply: Reply) => void>()
  private nextId = 1

  constructor(proc: LabProcess) {
    this.proc = proc
    proc.on('line', (line: string) => this.onLine(line))
  }

  private onLine(line: string): void {
    let msg: { ev?: string, re?: number } & Partial<AppClose>
    try { msg = JSON.parse(line) } catch { return }
    if (msg.ev === 'close' && msg.tag !== undefined) {
      this.closeEvents.set(msg.tag, { tag: msg.tag, how: msg.how ?? '?', t: msg.t ?? Date.now() })
    } else if (msg.re !== undefined) {
      this.pending.get(msg.re)?.(msg as Reply)
      this.pending.delete(msg.re)
    }
  }

  private request(op: string, fields: Record<string, unknown>): Promise<Reply> {
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.pending.set(id, reply => {
        if (reply.error !== undefined) reject(new Error(`client driver ${op}: ${reply.error}`))
        else resolve(reply)
      })
      this.proc.child.stdin?.write(JSON.stringify({ id, op, ...fields }) + '\n')
    })
  }

  /** Opens `count` sessions to `to`, each verified by one echo. Returns how many opened. */
  async open(group: string, to: Endpoint, count: number, timeoutMs = 5000): Promise<number> {
    const reply = await this.request('open', { group, host: to.host, port: to.port, count, timeoutMs })
    return reply.opened as number
  }

  /** One echo round trip per open session of `group`. */
  async ping(group: string, timeoutMs: number): Promise<Record<string, PingResult>> {
    return (await this.request('ping', { group, timeoutMs })).results as Record<string, PingResult>
  }

  /** Writes `text` on every open session of `group` without waiting; returns the time written. */
  async send(group: string, text: string): Promise<number> {
    return (await this.request('send', { group, text })).t as number
  }

  async destroy(group: string): Promise<void> {
    await this.request('destroy', { group })
  }

  /** Sessions of `group` that a relay or server has ended, by tag. */
  closes(group: string): AppClose[] {
    return [...this.closeEvents.values()].filter(c => c.tag.startsWith(`${group}/`))
  }
}

export async function startClientDriver(lab: Lab): Promise<ClientDriver> {
  const proc = spawnScript(lab, 'client', 'client-driver.ts', [])
  const driver = new ClientDriver(proc)
  await proc.waitForLine(line => line.includes('"ready"'), 15_000, 'ready')
  return driver
}
