// http(s)://…: a GET answered with a 2xx status. The URL may name the target being
// checked with {host} and {port}, so one URL serves every target: with Patroni,
// http://{host}:8008/primary is up on the primary only.
//
// The checker has its own undici agent (nothing shared with other HTTP use in the process)
// and closes the connection after every check, so each check connects, and resolves the
// host name, afresh; a connection wedged by a hung server cannot be reused. undici is loaded
// at the first check, not at start: a proxy without HTTP checks never loads it (a start, and so
// an upgrade, is 70 ms shorter).

import type { Agent } from 'undici'
import { CheckFailed } from '../errors.ts'
import { expandUrl } from '../config/heartbeat.ts'
import { failureOf, type Checker, type CheckTarget } from './checker.ts'
import { VERSION } from '../version.ts'

export function httpChecker(spec: { url: string }): Checker {
  let agent: Agent | undefined
  let closed = false
  return {
    async check(target, signal) {
      const { Agent, request } = await import('undici')
      if (closed) throw new CheckFailed('closed', 'the checker was closed')
      agent ??= new Agent({ pipelining: 0 })
      let response
      try {
        response = await request(expandUrl(spec.url, target), {
          method: 'GET',
          dispatcher: agent,
          signal,
          reset: true,
          headers: { 'user-agent': `ka-proxy/${VERSION} heartbeat` },
        })
      } catch (err) {
        const e = err as NodeJS.ErrnoException
        if (e.code === 'UND_ERR_SOCKET') throw new CheckFailed('closed', e.message, err)
        if (e.name === 'HTTPParserError' || e.code?.startsWith('HPE_')) throw new CheckFailed('bad_reply', `not HTTP: ${e.message}`, err)
        throw failureOf(e)
      }
      const { statusCode } = response
      await response.body.dump().catch(() => {})
      if (statusCode < 200 || statusCode > 299) throw new CheckFailed('http_status', `HTTP ${statusCode}`)
    },
    close: async () => {
      closed = true
      await agent?.close()
    },
  }
}
