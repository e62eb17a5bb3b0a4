// The pair secret file: the one thing both ends of a pair share. `ka-proxy pair-key FILE` writes
// one; routes read it (--pair-secret-file) when the config is resolved, so `check` and a reload
// see a bad file before anything listens. What the link derives from it is pair/secret.ts.

import { closeSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { dirname, basename, join } from 'node:path'
import { ConfigError } from '../errors.ts'

/** Characters a secret needs at least: 128 bits of hex would be 32; pair-key writes 64 (256 bits). */
export const MIN_SECRET_CHARS = 32

/** The secret in a file (surrounding whitespace ignored); a ConfigError naming `key` if unreadable or short. */
export function readPairSecret(path: string, key: string): Buffer {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(key, `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
  const secret = text.trim()
  if (secret.length < MIN_SECRET_CHARS) {
    throw new ConfigError(key, `${path} holds ${secret.length} characters; a pair secret needs at least ${MIN_SECRET_CHARS} (ka-proxy pair-key FILE writes one)`)
  }
  return Buffer.from(secret, 'utf8')
}

/**
 * Writes a new secret to `path`, readable by its owner only (0600). An existing file is kept
 * unless `force`; then it is replaced atomically (a reader never sees half a secret).
 */
export function writePairSecret(path: string, force: boolean): void {
  const text = `${randomBytes(32).toString('hex')}\n`
  const fail = (err: unknown): never => {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST') throw new ConfigError('pair-key', `${path} exists; add --force to replace it`)
    throw new ConfigError('pair-key', `cannot write ${path} (${code ?? (err as Error).message})`)
  }
  // Created 0600 from the start: never a moment when another user could read it.
  const temp = force ? join(dirname(path), `.${basename(path)}.${process.pid}.tmp`) : path
  let fd: number
  try {
    fd = openSync(temp, 'wx', 0o600)
  } catch (err) {
    return fail(err)
  }
  try {
    writeSync(fd, text)
  } catch (err) {
    closeSync(fd)
    unlinkSync(temp)
    return fail(err)
  }
  closeSync(fd)
  if (!force) return
  try {
    renameSync(temp, path)
  } catch (err) {
    unlinkSync(temp)
    fail(err)
  }
}
