// tcp: the target accepts a connection. Proves the kernel and the listening socket, not
// the application: a frozen server whose kernel still completes handshakes passes it.

import { exchange, type Checker } from './checker.ts'

export function tcpChecker(): Checker {
  return { check: (target, signal) => exchange(target, signal, {}) }
}
