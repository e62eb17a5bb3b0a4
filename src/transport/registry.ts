// Which transport moves a listener's bytes. The choice is made once, at the top (cli.ts, from
// the native helper's availability and KA_PROXY_RELAY), and given to the app and its listeners
// as an option; nothing below reads the environment for it. Adding a transport: one module
// implementing Transports, one line here, one member of TransportKind.

import { ConfigError } from '../errors.ts'
import type { SocketControl } from '../socket-control.ts'
import { nativeRelayClass, NativeTransports } from './native.ts'
import { StreamTransports } from './stream.ts'
import type { TransportDeps, TransportKind, Transports } from './transport.ts'

const TRANSPORTS: { [K in TransportKind]: new (deps: TransportDeps) => Transports } = {
  native: NativeTransports,
  stream: StreamTransports,
}

/** A listener's transports; throws when the native pump is asked for but not available. */
export function openTransports(kind: TransportKind, deps: TransportDeps): Transports {
  return new TRANSPORTS[kind](deps)
}

/** The native pump when the native helper is in use, else Node streams. */
export function defaultRelay(sockets: SocketControl): TransportKind {
  return sockets.native && nativeRelayClass() !== undefined ? 'native' : 'stream'
}

/**
 * The transport an operator asked for with KA_PROXY_RELAY (unset or empty: the default), checked
 * against what this process can do.
 */
export function chooseRelay(sockets: SocketControl, wanted: string | undefined): TransportKind {
  const available = defaultRelay(sockets)
  if (wanted === undefined || wanted === '') return available
  if (wanted !== 'native' && wanted !== 'stream') throw new ConfigError('KA_PROXY_RELAY', `expected native or stream (got "${wanted}")`)
  if (wanted === 'native' && available !== 'native') {
    throw new ConfigError('KA_PROXY_RELAY', `native needs the native helper, which is not in use (${sockets.fallbackReason ?? 'disabled'})`)
  }
  return wanted
}
