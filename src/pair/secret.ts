// The keys a pair link derives from the shared secret (read by config/pair-secret.ts). The link
// never uses the secret directly: two keys are derived from it (HKDF), one for TLS's pre-shared
// key and one for the hello's HMAC, so neither use can be turned against the other.

import { hkdfSync } from 'node:crypto'

/** The keys a link derives from the secret: TLS's pre-shared key, and the hello's HMAC key. */
export interface PairKeys {
  psk: Buffer
  hello: Buffer
}

export function pairKeys(secret: Buffer): PairKeys {
  const derive = (info: string): Buffer => Buffer.from(hkdfSync('sha256', secret, 'ka-proxy pair', info, 32))
  return { psk: derive('tls psk'), hello: derive('hello hmac') }
}
