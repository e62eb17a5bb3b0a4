// Clients turned away before a session starts: counted one by one, logged at most once a
// second per reason. A flood of refusals (a full --max-connections, the descriptor limit)
// must not turn into a flood of log lines: the first refusal is logged at once, the ones
// after it within the second are summed into one line when the second is over.

import type { Logger } from 'pino'

export type RefusalReason = 'max_connections' | 'no_healthy_target' | 'descriptor_limit' | 'cannot_start'

const MESSAGES: Record<RefusalReason, string> = {
  max_connections: 'connection refused: max connections reached',
  no_healthy_target: 'connection refused: no healthy target',
  descriptor_limit: 'connection refused: the proxy is out of file descriptors (raise its limit, ulimit -n)',
  cannot_start: 'connection refused: cannot start session',
}

/** Errors that say the proxy itself is out of resources, not that a peer failed. */
export const LOCAL_RESOURCE_ERRORS: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM'])

const WINDOW_MS = 1000

interface Window {
  count: number
  fields: object
  timer: NodeJS.Timeout
}

export class RefusalLog {
  readonly #logger: Logger
  readonly #count: ((reason: RefusalReason) => void) | undefined
  readonly #windows = new Map<RefusalReason, Window>()

  constructor(logger: Logger, count?: (reason: RefusalReason) => void) {
    this.#logger = logger
    this.#count = count
  }

  /** One refusal; `fields` describe it (the last ones of a second are those logged). */
  refused(reason: RefusalReason, fields: object): void {
    this.#count?.(reason)
    const open = this.#windows.get(reason)
    if (open !== undefined) {
      open.count++
      open.fields = fields
      return
    }
    this.#logger.warn({ reason, count: 1, ...fields }, MESSAGES[reason])
    this.#open(reason)
  }

  #open(reason: RefusalReason): void {
    const timer = setTimeout(refusalWindowOver, WINDOW_MS, this, reason).unref()
    this.#windows.set(reason, { count: 0, fields: {}, timer })
  }

  /** The second is over: one line for what it held, and another second, or quiet again. */
  windowOver(reason: RefusalReason): void {
    const w = this.#windows.get(reason)
    this.#windows.delete(reason)
    if (w === undefined || w.count === 0) return
    this.#logger.warn({ reason, count: w.count, ...w.fields }, `${MESSAGES[reason]} (${w.count} in the last second)`)
    this.#open(reason)
  }

  /** Logs what is pending now (the listener stops). */
  flush(): void {
    for (const [reason, w] of this.#windows) {
      clearTimeout(w.timer)
      this.windowOver(reason)
      clearTimeout(this.#windows.get(reason)?.timer)
    }
    this.#windows.clear()
  }
}

function refusalWindowOver(log: RefusalLog, reason: RefusalReason): void {
  log.windowOver(reason)
}
