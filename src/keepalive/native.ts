// Loads the socket-option addon built from native/. Loading may fail (no compiler at
// install time, another OS); the caller then falls back and says why, once.

import { createRequire } from 'node:module'

export interface NativeKeepalive {
  enabled: boolean
  idle: number
  interval: number
  count: number
  userTimeoutMs: number
}

export interface NativeTcpInfo {
  state: number
  retransmits: number
  probes: number
  backoff: number
  rtoUs: number
  unacked: number
  lastDataSentMs: number
  lastDataRecvMs: number
  lastAckRecvMs: number
  rttUs: number
  rttvarUs: number
  sndCwnd: number
  totalRetrans: number
}

/** The addon's surface; a negative number leaves that option as it is. */
export interface NativeSockopt {
  setKeepalive(fd: number, enable: number, idle: number, interval: number, count: number, userTimeoutMs: number): void
  getKeepalive(fd: number): NativeKeepalive
  tcpInfo(fd: number): NativeTcpInfo
  sendQueueBytes(fd: number): number
}

export type NativeLoad = { ok: true; binding: NativeSockopt } | { ok: false; reason: string }

const ADDON_PATH = '../../native/build/Release/ka_sockopt.node'

let cached: NativeLoad | undefined

/** KA_PROXY_NATIVE=0 turns the addon off, to run (and test) the fallback on purpose. */
export function loadNative(): NativeLoad {
  if (cached) return cached
  if (process.env.KA_PROXY_NATIVE === '0') {
    cached = { ok: false, reason: 'disabled by KA_PROXY_NATIVE=0' }
  } else if (process.platform !== 'linux') {
    cached = { ok: false, reason: `not supported on ${process.platform}` }
  } else {
    try {
      const require = createRequire(import.meta.url)
      cached = { ok: true, binding: require(ADDON_PATH) as NativeSockopt }
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      const reason = e.code === 'MODULE_NOT_FOUND' ? 'not built (run npm run build:native)' : e.message
      cached = { ok: false, reason }
    }
  }
  return cached
}
