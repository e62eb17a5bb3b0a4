// The one interface every heartbeat checker implements, and the socket exchange most of
// them share: connect, write a request if there is one, read until the reply can be judged.
//
// Each check opens its own connection (never a client's) and closes it when judged; the
// host name is resolved again for every check, as it is for every session.

import net from 'node:net'
import { CheckFailed } from '../errors.ts'
import { noDelay } from '../socket-control.ts'

export interface CheckTarget {
  host: string
  port: number
}

export interface Checker {
  /**
   * Resolves when the target answered as a healthy server does; rejects with CheckFailed
   * otherwise. Closes its connection when `signal` aborts (the scheduler's timeout).
   */
  check(target: CheckTarget, signal: AbortSignal): Promise<void>
  /** Optional: releases what the checker keeps between checks (an HTTP agent). */
  close?(): Promise<void>
}

/** What a reply read so far means: read more, the target is up, or why it is not. */
export type Verdict = 'more' | 'up' | { bad: string }

export interface Exchange {
  /** Bytes written once connected; none for protocols where the server speaks first. */
  request?: Buffer
  /** Judges all bytes received so far. Absent: a completed connect is enough. */
  judge?(reply: Buffer): Verdict
}

/** A reply that is still "more" after this many bytes is not what the checker waits for. */
const MAX_REPLY = 4096

export function exchange(target: CheckTarget, signal: AbortSignal, ex: Exchange): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new CheckFailed('timeout', 'aborted before it started'))
      return
    }
    const socket = net.connect({ host: target.host, port: target.port })
    noDelay(socket)
    let reply: Buffer = Buffer.alloc(0)
    let settled = false
    const done = (failure?: CheckFailed): void => {
      if (settled) return
      settled = true
      signal.removeEventListener('abort', onAbort)
      socket.destroy()
      if (failure) reject(failure)
      else resolve()
    }
    const onAbort = (): void => done(new CheckFailed('timeout', `no answer after ${reply.length} bytes`))
    signal.addEventListener('abort', onAbort, { once: true })
    socket.once('connect', () => {
      if (!ex.judge) done()
      else if (ex.request && ex.request.length > 0) socket.write(ex.request)
    })
    socket.on('data', (chunk: Buffer) => {
      reply = reply.length === 0 ? chunk : Buffer.concat([reply, chunk])
      const verdict = ex.judge!(reply)
      if (verdict === 'up') done()
      else if (verdict !== 'more') done(new CheckFailed('bad_reply', verdict.bad))
      else if (reply.length > MAX_REPLY) done(new CheckFailed('bad_reply', `no complete reply in ${reply.length} bytes`))
    })
    socket.once('end', () => done(new CheckFailed('closed', `connection closed by the target after ${reply.length} bytes`)))
    // Stays attached after done(): a late error on the destroyed socket must not throw.
    socket.on('error', (err: NodeJS.ErrnoException) => done(failureOf(err)))
  })
}

/**
 * Errors that say the check could not even be tried: the proxy is out of descriptors,
 * buffers or local ports. They say nothing about the target, so they never count
 * against it (a target marked down for them would have its healthy sessions reset).
 */
export const LOCAL_CHECK_ERRORS: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EADDRNOTAVAIL'])

/** Maps a socket or DNS error to a CheckFailed with a stable reason (`local`: ours, see above). */
export function failureOf(err: NodeJS.ErrnoException): CheckFailed {
  // undici wraps the socket's error in `cause`.
  const cause = (err as { cause?: NodeJS.ErrnoException }).cause
  const code = LOCAL_CHECK_ERRORS.has(cause?.code ?? '') ? cause!.code! : (err.code ?? err.name)
  if (LOCAL_CHECK_ERRORS.has(code)) return new CheckFailed('local', `${code}: the check could not run on this host`, err)
  switch (code) {
    case 'ECONNREFUSED':
      return new CheckFailed('refused', code, err)
    case 'ECONNRESET':
    case 'EPIPE':
      return new CheckFailed('reset', code, err)
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
      return new CheckFailed('dns', `${code} ${(err as { hostname?: string }).hostname ?? ''}`.trim(), err)
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return new CheckFailed('timeout', code, err)
    default:
      return new CheckFailed('error', err.message ? `${code}: ${err.message}` : code, err)
  }
}

/** A reply shown in a log line: printable ASCII as is, the rest escaped, cut short. */
export function showBytes(bytes: Buffer, max = 40): string {
  let out = ''
  for (const b of bytes.subarray(0, max)) {
    if (b === 0x0d) out += '\\r'
    else if (b === 0x0a) out += '\\n'
    else if (b === 0x5c) out += '\\\\'
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b)
    else out += `\\x${b.toString(16).padStart(2, '0')}`
  }
  return `"${out}${bytes.length > max ? '…' : ''}"`
}
