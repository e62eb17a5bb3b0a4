// The live line on a terminal while a probe runs (runs may take hours): phase, elapsed of the
// expected time, and the connections alive, dead and still pending. Rewritten in place once
// a second and on every verdict; nothing is drawn when stderr is not a terminal.

import type { ProgressState } from './runner.ts'

function clock(s: number): string {
  const total = Math.round(s)
  const h = Math.floor(total / 3600)
  const m = Math.floor((total % 3600) / 60)
  const sec = String(total % 60).padStart(2, '0')
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`
}

export function progressLine(p: ProgressState): string {
  return `probe: ${p.phase}  ${clock(p.elapsedS)} of ~${clock(p.expectedS)}  alive ${p.alive}  dead ${p.dead}  pending ${p.pending}`
}

export class ProgressDisplay {
  readonly #stream: NodeJS.WriteStream
  #timer: NodeJS.Timeout | undefined
  #last: (() => ProgressState) | undefined

  constructor(stream: NodeJS.WriteStream = process.stderr) {
    this.#stream = stream
  }

  get enabled(): boolean {
    return this.#stream.isTTY === true
  }

  /** Draws `state()` now and every second until stop(). */
  start(state: () => ProgressState): void {
    if (!this.enabled) return
    this.#last = state
    this.#timer = setInterval(() => this.draw(), 1000).unref()
    this.draw()
  }

  draw(): void {
    if (this.#last) this.#stream.write(`\r\x1b[K${progressLine(this.#last())}`)
  }

  stop(): void {
    clearInterval(this.#timer)
    if (this.#last) this.#stream.write('\r\x1b[K')
    this.#last = undefined
  }
}
