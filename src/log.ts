// Logging: JSON lines (pino) for machines, one readable line per event for people. Lines go
// to stdout, or to a file (--log-file, `log.file`) that SIGHUP reopens, for logrotate.
// pino-pretty is loaded only when the readable form is asked for.

import { pino, type DestinationStream, type Logger } from 'pino'
import type { LogOptions } from './config/log.ts'

export interface AppLogger {
  logger: Logger
  /** Reopens the log file (after logrotate moved it) and returns its path; undefined on stdout. */
  reopen(): string | undefined
  /** Lines formatted elsewhere (a worker thread's: src/workers.ts), written as they are. */
  write(text: string): void
  /** Whether lines are the readable form (a worker thread formats its lines the same way). */
  pretty: boolean
}

/**
 * `sink`: a worker thread's stream to the main thread, which writes its lines (`pretty` then
 * says the form: the main thread's).
 */
export async function createLogger(options: LogOptions, sink?: { stream: DestinationStream; pretty: boolean }): Promise<AppLogger> {
  // Asynchronous writes keep logging off the relay's hot path; pino flushes them at exit.
  const file = sink === undefined ? pino.destination({ dest: options.file ?? 1, sync: false, minLength: 0 }) : undefined
  const destination: DestinationStream = sink?.stream ?? new TurnBatch(file!)
  const terminal = options.file === undefined && process.stdout.isTTY === true
  const readable = sink?.pretty ?? (options.format === 'pretty' || (options.format === 'auto' && terminal))
  let stream: DestinationStream = destination
  if (readable) {
    const { default: pretty } = await import('pino-pretty')
    // pino-pretty writes to a stream (the file's, which it listens to), not to the turn's batch.
    // One line per event: a session's line carries its fields inline, not one per line.
    stream = pretty({ destination: sink?.stream ?? file!, ...(terminal ? {} : { colorize: false }), singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' })
  }
  const logger = pino({ level: options.level, base: { pid: process.pid } }, stream)
  return {
    logger,
    reopen: () => {
      if (options.file !== undefined) file?.reopen()
      return options.file
    },
    write: (text) => void destination.write(text),
    pretty: readable,
  }
}

type FileDestination = ReturnType<typeof pino.destination>

/** Batches holding lines (each until the end of its turn), written out before pino's flush at exit. */
const pendingBatches = new Set<TurnBatch>()
let exitHooked = false

function flushPendingBatches(): void {
  for (const batch of pendingBatches) batch.flushLines()
}

/**
 * The lines of one event-loop turn go to the file as one write. A close storm logs a line per
 * session, a few hundred in a turn, and the file stream's work per line it is given (its byte
 * counts, a concatenation, a write when idle) cost several times what building the line does;
 * given one string a turn, a close storm's closes took about 7 µs of user space less each
 * (bench/README.md, "The session-closed line"). Lines keep their order, and a line is out by
 * the end of the turn that wrote it, or at exit.
 */
class TurnBatch implements DestinationStream {
  readonly #file: FileDestination
  readonly #lines: string[] = []

  constructor(file: FileDestination) {
    this.#file = file
    if (!exitHooked) {
      exitHooked = true
      // Ahead of pino's own exit hook, which flushes the file synchronously.
      process.prependListener('exit', flushPendingBatches)
    }
  }

  write(line: string): void {
    if (this.#lines.push(line) === 1) {
      pendingBatches.add(this)
      setImmediate(turnBatchFlush, this)
    }
  }

  /** What pino's logger.flush() calls: the lines held, then the file's own flush. */
  flush(cb?: (err?: Error | null) => void): void {
    this.flushLines()
    this.#file.flush(cb)
  }

  flushLines(): void {
    const lines = this.#lines
    if (lines.length === 0) return
    pendingBatches.delete(this)
    const text = lines.length === 1 ? lines[0]! : lines.join('')
    lines.length = 0
    this.#file.write(text)
  }
}

function turnBatchFlush(batch: TurnBatch): void {
  batch.flushLines()
}
