// --pid-file / `pidFile:`: the serving process's pid, for `kill -USR2 "$(cat FILE)"` and init
// scripts (HAProxy's -p, PgBouncer's pidfile). Written atomically (a temporary file in the same
// directory, renamed over the old one), so a reader never sees it half-written; rewritten by the
// process that takes over in an upgrade; removed on a clean exit, but only while it still names
// this process (after an upgrade it names the new one, which the old one must not delete).

import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs'
import { ConfigError } from './errors.ts'

export class PidFile {
  readonly path: string
  /** The flag or config key that named the file, for error messages. */
  readonly key: string

  constructor(path: string, key: string) {
    this.path = path
    this.key = key
  }

  /** Writes this process's pid; throws ConfigError naming the key when the file cannot be written. */
  write(pid = process.pid): void {
    const temporary = `${this.path}.${pid}.tmp`
    try {
      const fd = openSync(temporary, 'w', 0o644)
      try {
        writeSync(fd, `${pid}\n`)
        fsyncSync(fd)
      } finally {
        closeSync(fd)
      }
      renameSync(temporary, this.path)
    } catch (err) {
      rmSync(temporary, { force: true })
      throw new ConfigError(this.key, `cannot write ${this.path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
    }
  }

  /** Removes the file if it still names `pid`; never throws (the process is exiting). */
  remove(pid = process.pid): boolean {
    try {
      if (readFileSync(this.path, 'utf8').trim() !== String(pid)) return false
      rmSync(this.path, { force: true })
      return true
    } catch {
      return false
    }
  }
}
