// Logging: JSON lines (pino) for machines, one readable line per event for people. Lines go
// to stdout, or to a file (--log-file, `log.file`) that SIGHUP reopens, for logrotate.
// pino-pretty is loaded only when the readable form is asked for.

import { accessSync, closeSync, constants, existsSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import { pino, type DestinationStream, type Logger } from 'pino'
import { ConfigError } from './errors.ts'

export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const
export type LogFormat = (typeof LOG_FORMATS)[number]
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

export interface LogOptions {
  level: LogLevel
  /** auto: pretty when the lines go to a terminal, JSON otherwise. */
  format: LogFormat
  /** Append to this file instead of writing to stdout; undefined: stdout. */
  file: string | undefined
}

export const LOG_DEFAULTS = { level: 'info', format: 'auto' } as const

/** Each value from the flag, else the config file's `log:`, else the default. */
export function resolveLog(flags: Partial<LogOptions>, file: Partial<LogOptions> | undefined): LogOptions {
  return {
    level: flags.level ?? file?.level ?? LOG_DEFAULTS.level,
    format: flags.format ?? file?.format ?? LOG_DEFAULTS.format,
    file: flags.file ?? file?.file,
  }
}

/**
 * Throws ConfigError naming `key` when the log file cannot be appended to. `create`: open it
 * (creating it) as the running proxy will; otherwise only look (for `ka-proxy check`).
 */
export function checkLogFile(path: string, key: string, create: boolean): void {
  try {
    if (create) closeSync(openSync(path, 'a'))
    else accessSync(existsSync(path) ? path : dirname(path), constants.W_OK)
  } catch (err) {
    throw new ConfigError(key, `cannot append to ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
}

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
