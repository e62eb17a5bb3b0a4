// host:port parsing for --listen and --target, IPv6 in brackets ([::1]:5432).

import { isIP } from 'node:net'
import { ConfigError } from '../errors.ts'

export interface Endpoint {
  /** undefined for a listen address given as a bare port: all interfaces. */
  host: string | undefined
  port: number
}

function parsePort(text: string, key: string, allowZero: boolean): number {
  if (!/^\d+$/.test(text)) throw new ConfigError(key, `port must be a number from ${allowZero ? 0 : 1} to 65535 (got "${text}")`)
  const port = Number(text)
  if (port > 65535 || (!allowZero && port === 0)) {
    throw new ConfigError(key, `port must be a number from ${allowZero ? 0 : 1} to 65535 (got ${port})`)
  }
  return port
}

function split(text: string, key: string): { host: string | undefined; port: string } {
  const bracketed = /^\[([^\]]+)\]:(.*)$/.exec(text)
  if (bracketed) {
    if (isIP(bracketed[1]!) !== 6) throw new ConfigError(key, `"${bracketed[1]}" is not an IPv6 address`)
    return { host: bracketed[1], port: bracketed[2]! }
  }
  const colon = text.lastIndexOf(':')
  if (colon < 0) return { host: undefined, port: text }
  const host = text.slice(0, colon)
  if (host.includes(':')) throw new ConfigError(key, `write an IPv6 address in brackets, as [${host}]:port`)
  return { host, port: text.slice(colon + 1) }
}

/** `[host:]port`; port 0 asks the kernel for a free port. */
export function parseListen(value: unknown, key = '--listen'): Endpoint {
  const text = String(value ?? '').trim()
  if (text === '') throw new ConfigError(key, 'expected [host:]port, e.g. 15432 or 127.0.0.1:15432')
  const { host, port } = split(text, key)
  if (host === '') throw new ConfigError(key, `missing host before ":" in "${text}"`)
  return { host, port: parsePort(port, key, true) }
}

/** `host:port`; the host may be a name, resolved again for every new connection. */
export function parseTarget(value: unknown, key = '--target'): Endpoint & { host: string } {
  const text = String(value ?? '').trim()
  if (text === '') throw new ConfigError(key, 'expected host:port, e.g. 127.0.0.1:5432')
  const { host, port } = split(text, key)
  if (host === undefined || host === '') throw new ConfigError(key, `expected host:port (got "${text}")`)
  return { host, port: parsePort(port, key, false) }
}

export function formatEndpoint(host: string | undefined, port: number | undefined): string {
  const h = host ?? '*'
  return h.includes(':') ? `[${h}]:${port}` : `${h}:${port}`
}

/**
 * A connected peer as logged: an IPv4 client of a dual-stack listener (a bare port) shows as
 * 127.0.0.1:5000, not [::ffff:127.0.0.1]:5000; "unknown" when the kernel could no longer tell
 * (the peer reset the connection before it was accepted).
 */
export function formatPeer(address: string | undefined, port: number | undefined): string {
  if (address === undefined || address === '' || port === undefined) return 'unknown'
  return formatEndpoint(address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address, port)
}

/** `host:port[,host:port...]`: targets in order of preference, each resolved per connection. */
export function parseTargets(value: unknown, key = '--target'): Array<Endpoint & { host: string }> {
  const items = String(value ?? '').split(',').map((s) => s.trim())
  if (items.length > 1 && items.includes('')) throw new ConfigError(key, `empty entry in the list "${String(value)}"`)
  const targets = items.map((item) => parseTarget(item, key))
  const names = targets.map((t) => formatEndpoint(t.host, t.port))
  const twice = names.find((n, i) => names.indexOf(n) !== i)
  if (twice !== undefined) throw new ConfigError(key, `${twice} is listed twice`)
  return targets
}
