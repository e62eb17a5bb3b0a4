// Logging: JSON lines (pino) for machines, one readable line per event for people. Lines go
// to stdout, or to a file (--log-file, `log.file`) that SIGHUP reopens, for logrotate.
// pino-pretty is loaded only when the readable form is asked for.

import { pino, type DestinationStream, type Logger } from 'pino'
import type { LogOptions } from './config/log.ts'

export interface AppLogger {
  logger: Logger
  /** Reopens the log file (after logrotate moved it) and returns its path; undefined on stdout. */
  reopen(): string | undefined
}

export async function createLogger(options: LogOptions): Promise<AppLogger> {
  // Asynchronous writes keep logging off the relay's hot path; pino flushes them at exit.
  const destination = pino.destination({ dest: options.file ?? 1, sync: false, minLength: 0 })
  const terminal = options.file === undefined && process.stdout.isTTY === true
  let stream: DestinationStream = destination
  if (options.format === 'pretty' || (options.format === 'auto' && terminal)) {
    const { default: pretty } = await import('pino-pretty')
    // One line per event: a session's line carries its fields inline, not one per line.
    stream = pretty({ destination, ...(terminal ? {} : { colorize: false }), singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' })
  }
  const logger = pino({ level: options.level, base: { pid: process.pid } }, stream)
  return {
    logger,
    reopen: () => {
      if (options.file !== undefined) destination.reopen()
      return options.file
    },
  }
}
