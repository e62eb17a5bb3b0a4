// The echo server as seen from the bench: start it in the server namespace, collect its events.

import type { Lab } from './lab.ts'
import type { LabProcess } from './process.ts'
import { spawnScript } from './node-script.ts'

export interface ServerEvent {
  ev: 'listening' | 'open' | 'close'
  port?: number
  tag?: string | null
  how?: string
  t: number
}

export class EchoServer {
  readonly proc: LabProcess
  readonly events: ServerEvent[] = []

  constructor(proc: LabProcess) {
    this.proc = proc
    for (const line of proc.lines) this.record(line)
    proc.on('line', (line: string) => this.record(line))
  }

  private record(line: string): void {
    try { this.events.push(JSON.parse(line) as ServerEvent) } catch { /* not an event */ }
  }

  /** Close events of the sessions of `group` (tags "<group>/<index>"). */
  closes(group: string): ServerEvent[] {
    return this.events.filter(e => e.ev === 'close' && typeof e.tag === 'string' && e.tag.startsWith(`${group}/`))
  }
}

/** Starts the echo server on `ports` in the server namespace and waits until it listens. */
export async function startEchoServer(lab: Lab, ports: readonly number[]): Promise<EchoServer> {
  const proc = spawnScript(lab, 'server', 'echo-server.ts', ports.map(String))
  await proc.waitForLine(line => line.includes('"listening"'), 15_000, 'listening')
  return new EchoServer(proc)
}
