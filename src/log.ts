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
  const destination: DestinationStream = sink?.stream ?? file!
  const terminal = options.file === undefined && process.stdout.isTTY === true
  const readable = sink?.pretty ?? (options.format === 'pretty' || (options.format === 'auto' && terminal))
  let stream: DestinationStream = destination
  if (readable) {
    const { default: pretty } = await import('pino-pretty')
    // One line per event: a session's line carries its fields inline, not one per line.
    stream = pretty({ destination, ...(terminal ? {} : { colorize: false }), singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' })
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
