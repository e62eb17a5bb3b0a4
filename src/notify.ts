// sd_notify(3): tells systemd (a unit with Type=notify) when the proxy is ready, reloading and
// stopping, and a one-line STATUS= that `systemctl status` shows. The datagram goes to the Unix
// socket named in NOTIFY_SOCKET ('@name' is an abstract socket); without NOTIFY_SOCKET every
// call is a no-op. Node's dgram speaks only UDP, so the sendto is the native helper's
// (native/ka_notify.c); without the helper, systemd is told nothing and the proxy says so once.
//
// A failed send is logged and never stops the proxy: systemd, not the relay, depends on it.

import { loadNative } from './native.ts'

type Send = (socket: string, message: string) => void

/** Where warnings go (a pino logger). */
export interface WarnSink {
  warn(fields: object, message: string): void
}

/** Longest STATUS= text sent; systemd shows one line. */
const MAX_STATUS = 1000

export class ServiceNotifier {
  readonly socket: string | undefined
  readonly #send: Send | undefined
  readonly #logger: WarnSink

  /** `socket` defaults to NOTIFY_SOCKET; `send` to the native helper's sendto. */
  constructor(logger: WarnSink, options: { socket?: string; send?: Send } = {}) {
    this.#logger = logger
    const socket = 'socket' in options ? options.socket : process.env.NOTIFY_SOCKET
    this.socket = socket === '' ? undefined : socket
    if (this.socket === undefined) return
    if (options.send) {
      this.#send = options.send
      return
    }
    const load = loadNative()
    if (load.ok) {
      this.#send = load.binding.notify
    } else {
      logger.warn(
        { notifySocket: this.socket, reason: load.reason },
        'NOTIFY_SOCKET is set but sd_notify needs the native helper: systemd will not hear READY=1 (use Type=exec, or build the helper)',
      )
    }
  }

  /** Startup finished, or a reload did: READY=1. */
  ready(status: string): void {
    this.#notify(['READY=1', statusLine(status)])
  }

  /** A reload has begun; `ready` ends it. MONOTONIC_USEC is what Type=notify-reload asks for. */
  reloading(status: string): void {
    this.#notify(['RELOADING=1', `MONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`, statusLine(status)])
  }

  /**
   * An upgrade is done: the process `pid` serves now (MAINPID=, sent by the old main process,
   * the one systemd accepts it from), and the reload is over (READY=1).
   */
  mainPid(pid: number, status: string): void {
    this.#notify([`MAINPID=${pid}`, 'READY=1', statusLine(status)])
  }

  /** Shutdown has begun: STOPPING=1. */
  stopping(status: string): void {
    this.#notify(['STOPPING=1', statusLine(status)])
  }

  status(status: string): void {
    this.#notify([statusLine(status)])
  }

  #notify(lines: string[]): void {
    if (this.socket === undefined || this.#send === undefined) return
    try {
      this.#send(this.socket, lines.join('\n'))
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      this.#logger.warn({ notifySocket: this.socket, code: e.code, error: e.message }, `sd_notify failed: ${lines[0]} not delivered`)
    }
  }
}

/** One STATUS= line: newlines would start another KEY= assignment. */
function statusLine(text: string): string {
  const flat = text.replace(/[\r\n]+/g, ' ')
  return `STATUS=${flat.length > MAX_STATUS ? `${flat.slice(0, MAX_STATUS - 1)}…` : flat}`
}
