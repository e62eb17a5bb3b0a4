// Logging: JSON lines (pino) for machines, a readable form for people at a terminal.

import { pino, type Logger } from 'pino'
import pretty from 'pino-pretty'

export type LogFormat = 'json' | 'pretty' | 'auto'
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

export function createLogger(options: { level: LogLevel; format: LogFormat }): Logger {
  const usePretty = options.format === 'pretty' || (options.format === 'auto' && process.stdout.isTTY === true)
  const base = { level: options.level, base: { pid: process.pid } }
  if (usePretty) {
    return pino(base, pretty({ destination: 1, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }))
  }
  // Asynchronous writes keep logging off the relay's hot path; flushed at exit.
  return pino(base, pino.destination({ dest: 1, sync: false, minLength: 0 }))
}
