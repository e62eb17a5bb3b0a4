// Clients turned away before a session starts: counted one by one, logged at most once a
// second per reason. A flood of refusals (a full --max-connections, the descriptor limit)
// must not turn into a flood of log lines: the first refusal is logged at once, the ones
// after it within the second are summed into one line when the second is over.

import { readdirSync, readFileSync } from 'node:fs'
import type { Logger } from 'pino'

export type RefusalReason = 'max_connections' | 'no_healthy_target' | 'descriptor_limit' | 'cannot_start' | 'pair_bad_secret' | 'pair_not_pair'

const MESSAGES: Record<RefusalReason, string> = {
  max_connections: 'connection refused: max connections reached',
  no_healthy_target: 'connection refused: no healthy target',
  descriptor_limit: 'connection refused: the proxy is out of file descriptors (it keeps 16 free; raise its limit, ulimit -n)',
  cannot_start: 'connection refused: cannot start session',
  // A pair listener's (src/pair/link.ts): a peer without the secret, or one not speaking TLS 1.3 at all.
  pair_bad_secret: 'pair link refused: the peer does not hold the pair secret',
  pair_not_pair: 'pair link refused: the peer does not speak the pair protocol',
}

/** Errors that say the proxy itself is out of resources, not that a peer failed. */
export const LOCAL_RESOURCE_ERRORS: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM'])

const WINDOW_MS = 1000

/**
 * Descriptors kept free for what sessions need besides their client: the target leg, heartbeat
 * checks, admin connections. A client is refused while fewer are left, rather than let the
 * runtime close it silently at the limit (libuv's EMFILE handling accepts and drops it unseen).
 */
export const DESCRIPTOR_RESERVE = 16

let limitReadAt = -Infinity
let softLimit = Infinity

/** RLIMIT_NOFILE's soft value (from /proc, re-read at most once a second: prlimit may change it). */
function descriptorLimit(): number {
  const now = performance.now()
  if (now - limitReadAt < 1000) return softLimit
  limitReadAt = now
  try {
    const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    softLimit = line && line[1] !== 'unlimited' ? Number(line[1]) : Infinity
  } catch {
    softLimit = Infinity
  }
  return softLimit
}

/** Descriptors this process can still open: its limit less those open (MAX_SAFE_INTEGER when unlimited or unknown). */
export function freeDescriptors(): number {
  const limit = descriptorLimit()
  if (!Number.isFinite(limit)) return Number.MAX_SAFE_INTEGER
  try {
    return limit - readdirSync('/proc/self/fd').length
  } catch {
    return Number.MAX_SAFE_INTEGER
  }
}

/**
 * Whether an accepted descriptor leaves the reserve intact. The kernel hands out the lowest
 * free number, so descriptor `fd` means every lower one is in use: no count needed.
 */
export function withinDescriptorReserve(fd: number): { ok: boolean; limit: number } {
  const limit = descriptorLimit()
  return { ok: fd < 0 || fd < limit - DESCRIPTOR_RESERVE, limit }
}

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
