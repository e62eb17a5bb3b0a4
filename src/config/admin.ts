// The admin API's settings, from --admin/--admin-token or a config file's `admin:`: the
// address, and the token that must protect it unless it is loopback only.

import { isIP } from 'node:net'
import { ConfigError } from '../errors.ts'
import { formatEndpoint, parseListen, type Endpoint } from './endpoint.ts'

export interface AdminOptions {
  listen: Endpoint
  token: string | undefined
  /** The flag or config key that set the address, for errors (`--admin`, `FILE: admin`). */
  listenKey: string
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost'])

/** The shortest token accepted, wherever it comes from (flag, KA_PROXY_ADMIN_TOKEN, file). */
export const MIN_TOKEN_LENGTH = 16

/**
 * `keys`: what names the address and the token in an error (the flags, or the file's
 * `admin` and `admin.token`). The token gets the same check from every source.
 */
export function resolveAdmin(value: string | { listen: string; token?: string | undefined }, keys: { listen: string; token: string }): AdminOptions {
  const listen = parseListen(typeof value === 'string' ? value : value.listen, keys.listen)
  const token = typeof value === 'string' ? undefined : value.token
  if (token !== undefined) {
    if (token.length < MIN_TOKEN_LENGTH) {
      throw new ConfigError(keys.token, `must be at least ${MIN_TOKEN_LENGTH} characters long (${token === '' ? 'it is empty' : `got ${token.length}`})`)
    }
    // What a client can send after "Bearer ": visible ASCII, no spaces.
    if (!/^[\x21-\x7e]+$/.test(token)) throw new ConfigError(keys.token, 'must be printable ASCII without spaces')
  }
  const host = listen.host
  const loopback = host !== undefined && (LOOPBACK.has(host) || (isIP(host) === 4 && host.startsWith('127.')))
  if (!loopback && token === undefined) {
    throw new ConfigError(keys.listen, `${formatEndpoint(host, listen.port)} is not a loopback address: set a token (at least ${MIN_TOKEN_LENGTH} characters) to expose the admin API`)
  }
  return { listen, token, listenKey: keys.listen }
}
