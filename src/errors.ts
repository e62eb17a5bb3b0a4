// Errors with stable codes. The CLI maps them to exit codes; logs and tests match on
// `code`, never on message text. The original error, when there is one, stays in `cause`.

import { getSystemErrorName } from 'node:util'

export const EXIT_USAGE = 2
export const EXIT_ADDRESS_IN_USE = 3
export const EXIT_FAILURE = 1
/** An error nothing handled: the process's state is unknown, so it exits (sysexits EX_SOFTWARE). */
export const EXIT_INTERNAL = 70

export class KaError extends Error {
  readonly code: string
  readonly exitCode: number

  constructor(code: string, message: string, exitCode = EXIT_FAILURE, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
    this.exitCode = exitCode
  }
}

/** Bad flag, config key or value. `key` is the flag or path the user has to fix. */
export class ConfigError extends KaError {
  readonly key: string

  constructor(key: string, message: string) {
    super('KA_ERR_CONFIG', `${key}: ${message}`, EXIT_USAGE)
    this.key = key
  }
}

/** The listen address cannot be bound (in use, not permitted, not local). */
export class ListenError extends KaError {
  readonly address: string

  /** `key`: the flag or config key that set the address. */
  constructor(address: string, cause: NodeJS.ErrnoException, key = '--listen') {
    const inUse = cause.code === 'EADDRINUSE'
    super(
      inUse ? 'KA_ERR_ADDRESS_IN_USE' : 'KA_ERR_LISTEN',
      inUse
        ? `${key}: address ${address} is already in use`
        : `${key}: cannot listen on ${address} (${cause.code ?? cause.message})`,
      inUse ? EXIT_ADDRESS_IN_USE : EXIT_FAILURE,
      { cause },
    )
    this.address = address
  }
}

/** A socket option could not be set or read; `errno` names the kernel's answer (EBADF, EINVAL, ...). */
export class SocketOptionError extends KaError {
  readonly errno: string
  readonly option: string

  constructor(option: string, errno: string, message: string, cause?: unknown) {
    super('KA_ERR_SOCKOPT', message, EXIT_FAILURE, { cause })
    this.errno = errno
    this.option = option
  }
}

/**
 * A heartbeat check found its target not answering as it should. `reason` is a stable
 * short code for logs: timeout, refused, reset, closed, bad_reply, http_status, dns, error;
 * local: the check could not run here (out of descriptors...), which says nothing about the target.
 */
export class CheckFailed extends KaError {
  readonly reason: string

  constructor(reason: string, message: string, cause?: unknown) {
    super('KA_ERR_CHECK_FAILED', message, EXIT_FAILURE, { cause })
    this.reason = reason
  }
}

/** ECONNRESET and the like for an errno (positive, as the kernel gives it). */
export function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-Math.abs(errno))
  } catch {
    return `errno ${errno}`
  }
}
