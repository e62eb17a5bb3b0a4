// Where and how the process logs, from --log-* flags or a config file's `log:`; src/log.ts
// builds the logger from these.

import { accessSync, closeSync, constants, existsSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import { ConfigError } from '../errors.ts'

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
