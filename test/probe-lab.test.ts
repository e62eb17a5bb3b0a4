// `ka-proxy probe` on real paths in the lab: the NAT forgets idle flows after T = 8 s, the echo
// responder (`ka-proxy probe-server`) runs in the server namespace, the probe in the client's.
// 1. NAT only: the timeout is bracketed around 8 s, flows die silently, keepalive holds.
// 2. HAProxy in the NAT's namespace with `timeout client/server 6s` (it counts data only):
//    the timeout is found, and keepalive is reported as not holding.

import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createLab, labUnsupported, type Lab } from '../bench/lab/index.ts'
import { kaProxyEntryArgs } from '../bench/lab/relays/ka-proxy.ts'
import { missingCommand } from '../bench/lab/relays/command.ts'
import { REPO_ROOT } from '../bench/lab/node-script.ts'
import { waitForListening } from '../bench/lab/ss.ts'

const NAT_TIMEOUT = 8
const HAPROXY_TIMEOUT = 6
const ECHO_PORT = 7000
const HAPROXY_PORT = 7100
/** Small enough for a short test, fine enough for the "high - low <= 2". */
const PROBE_ARGS = ['--max', '16', '--resolution', '1', '--reply-timeout', '2', '--json']

/** Under CI a missing prerequisite fails the run; elsewhere the test skips with the reason. */
async function prerequisite(...reasons: Array<Promise<string | null>>): Promise<string | false> {
  for (const r of reasons) {
    const reason = await r
    if (reason === null) continue
    if (process.env.CI === 'true') t.fail(`CI=true and a prerequisite is missing: ${reason}`)
    return reason
  }
  return false
}

const skipNat = await prerequisite(labUnsupported())
const skipHaproxy = skipNat || await prerequisite(missingCommand('haproxy', ['-v'], 'haproxy'))

interface ProbeJson {
  idleTimeout: { low: number, high: number, how: string } | null
  serverClosedAfter: number | null
  keepaliveHolds: boolean | null
  recommended: { idle: number, interval: number, count: number }
  samples: Array<{ idle: number, alive: boolean, how: string | null, phase: string }>
  keepalive: { idle: number, interval: number, readBack: { idle: number, interval: number } | null } | null
  command: string
  durationS: number
}

async function labFor(t: Test): Promise<Lab> {
  const lab = await createLab({ natTimeout: NAT_TIMEOUT })
  t.teardown(() => lab.destroy())
  const server = lab.spawn('server', 'probe-server', process.execPath, [...kaProxyEntryArgs('src'), 'probe-server', '--listen', String(ECHO_PORT)], { cwd: REPO_ROOT })
  await server.waitForLine(line => line.includes('echoing on'), 20_000, 'its "echoing on" line')
  return lab
}

async function probe(lab: Lab, target: string): Promise<{ code: number | null, json: ProbeJson, stderr: string }> {
  const proc = lab.spawn('client', 'probe', process.execPath, [...kaProxyEntryArgs('src'), 'probe', '--target', target, ...PROBE_ARGS], { cwd: REPO_ROOT })
  const code = await proc.exited
  const line = proc.lines.find(l => l.startsWith('{'))
  if (line === undefined) throw new Error(`probe printed no JSON (exit ${code}): ${proc.stderr}`)
  return { code, json: JSON.parse(line) as ProbeJson, stderr: proc.stderr }
}

t.test(`NAT that forgets idle flows after ${NAT_TIMEOUT} s, echo responder behind it`, { skip: skipNat }, async t => {
  const lab = await labFor(t)
  const { code, json } = await probe(lab, `${lab.addresses.server}:${ECHO_PORT}`)
  t.comment(`idleTimeout ${JSON.stringify(json.idleTimeout)}, keepalive ${JSON.stringify(json.keepalive)}, recommended ${JSON.stringify(json.recommended)}, ${json.durationS} s`)
  t.equal(code, 0, 'exit 0: measured')
  const b = json.idleTimeout
  if (b === null) throw new Error(`no timeout found: ${JSON.stringify(json.samples)}`)
  t.ok(b.low <= NAT_TIMEOUT && NAT_TIMEOUT <= b.high, `low ${b.low} <= ${NAT_TIMEOUT} <= high ${b.high}`)
  t.ok(b.high - b.low <= 2, `bracket within 2 s (${b.high - b.low})`)
  t.equal(b.how, 'silent', 'flows die silently')
  t.equal(json.serverClosedAfter, null, 'the responder never closes')
  t.ok(json.samples.some(s => s.alive && s.idle === b.low) && json.samples.some(s => !s.alive && s.idle === b.high), 'low and high are measured samples')
  t.equal(json.keepaliveHolds, true, 'keepalive holds the NAT open')
  t.ok(json.keepalive !== null && json.keepalive.idle <= NAT_TIMEOUT / 2, `keepalive idle ${json.keepalive?.idle} s: about half the timeout`)
  t.same(json.keepalive?.readBack && { idle: json.keepalive.readBack.idle, interval: json.keepalive.readBack.interval },
    { idle: json.keepalive?.idle, interval: json.keepalive?.interval }, 'set through the native helper and read back')
  t.ok(json.recommended.idle < NAT_TIMEOUT, `recommended idle ${json.recommended.idle} s < ${NAT_TIMEOUT}`)
  t.ok(json.recommended.idle + json.recommended.interval < b.low, 'idle + interval stays under the timeout')
  t.match(json.command, `--target ${lab.addresses.server}:${ECHO_PORT} --idle ${json.recommended.idle} --interval ${json.recommended.interval} --count ${json.recommended.count}`)
  t.ok(json.durationS < 3 * NAT_TIMEOUT + 60, `wall time ${json.durationS} s within 3 × T + 1 min`)
})

t.test(`HAProxy (timeout ${HAPROXY_TIMEOUT} s, data only) inside the NAT`, { skip: skipHaproxy }, async t => {
  const lab = await labFor(t)
  const config = join(lab.tempDir('haproxy'), 'haproxy.cfg')
  writeFileSync(config, `defaults
  mode tcp
  timeout connect 5s
  timeout client ${HAPROXY_TIMEOUT}s
  timeout server ${HAPROXY_TIMEOUT}s
frontend probe
  bind ${lab.addresses.routerClientSide}:${HAPROXY_PORT}
  default_backend echo
backend echo
  server s1 ${lab.addresses.server}:${ECHO_PORT}
`)
  const haproxy = lab.spawn('router', 'haproxy', 'haproxy', ['-db', '-f', config])
  await haproxy.readyWhen(waitForListening(lab.ns('router'), HAPROXY_PORT, 10_000), 'listening')
  const { code, json } = await probe(lab, `${lab.addresses.routerClientSide}:${HAPROXY_PORT}`)
  t.comment(`idleTimeout ${JSON.stringify(json.idleTimeout)}, keepalive ${JSON.stringify(json.keepalive)}, ${json.durationS} s`)
  t.equal(code, 0, 'exit 0: measured')
  const b = json.idleTimeout
  if (b === null) throw new Error(`no timeout found: ${JSON.stringify(json.samples)}`)
  t.ok(b.low <= HAPROXY_TIMEOUT + 0.5 && HAPROXY_TIMEOUT - 0.5 <= b.high && b.high - b.low <= 2, `HAProxy's ${HAPROXY_TIMEOUT} s found: ${b.low}..${b.high}`)
  t.not(b.how, 'silent', `HAProxy closes (${b.how}); it does not drop silently`)
  t.equal(json.keepaliveHolds, false, 'keepalive does not hold: the box counts data only')
})
