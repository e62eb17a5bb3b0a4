// The upgrade (SIGUSR2, src/upgrade.ts) under load: ka-proxy holds many idle sessions
// (upgrade-idle), or a hundred busy ones whose every byte is checked (upgrade-busy), plus one
// 64-byte ping-pong session; the bench sends SIGUSR2 and times until the old process exits.
// What the figures are made of:
// - SIGUSR2 → old process exit, on the bench's clock: the aim is under 1 s with 10,000 sessions;
// - spawn → ready and the new process's adoption time, from the two processes' log lines;
// - the relay's own start (spawn → listening, measured when the bench started it with the same
//   command the upgrade runs again): most of spawn → ready is the new process starting, not the
//   hand-over, and a start from TypeScript through tsx is slower than from dist/;
// - the ping-pong session's longest round trip overlapping SIGUSR2 → exit against its median
//   before: the stall the upgrade puts on a live session (aim: under 100 ms);
// - afterwards every idle session must still echo, and every busy session must have got back
//   every byte it sent, in order: anything else fails the measurement, naming what was lost.

import { readFileSync } from 'node:fs'
import { sleep } from '../../lab/exec.ts'
import { parseJson } from '../../lab/relays/ka-proxy.ts'
import type { CheckResult, Streams, StreamResult, Trace, TraceResult } from '../loadgen.ts'
import type { CaseName } from '../options.ts'
import type { RelayProcess } from '../relay-process.ts'
import type { PerfCase, Metrics } from './case.ts'

/** Ping-pong before SIGUSR2, for its median; and after the exit, so the stall is seen to end. */
const BEFORE_MS = 1000
const AFTER_MS = 500
/** An old process not gone by then has kept sessions (or hung): the measurement fails. */
const EXIT_BOUND_MS = 30_000
/** Time for the new process's log line after the old one has exited. */
const LOG_BOUND_MS = 5000

const NEW_PROCESS_MSG = 'upgrade: took over the listeners and sessions'

interface UpgradeLog {
  /** Old process: spawn → the new one's 'ready'. */
  readyMs: number
  sessions: number
  kept: number
  /** New process: building the adopted sessions. */
  adoptMs: number
}

function logLines(path: string): Array<Record<string, unknown>> {
  return readFileSync(path, 'utf8').split('\n').map(parseJson).filter(l => l !== null)
}

/** The two processes' lines about the upgrade; throws with the reason when it failed. */
async function upgradeLog(relay: RelayProcess): Promise<UpgradeLog> {
  const deadline = Date.now() + LOG_BOUND_MS
  const msg = (l: Record<string, unknown>): string => String(l.msg ?? '')
  for (;;) {
    const lines = logLines(relay.logPath)
    // The log file is the relay's across measurements: only this process's lines, and its new one's.
    const failed = lines.find(l => l.pid === relay.pid && msg(l).startsWith('upgrade failed'))
    if (failed !== undefined) throw new Error(`upgrade: ${msg(failed)}`)
    const done = lines.find(l => l.pid === relay.pid && msg(l).startsWith('upgrade done'))
    const took = done === undefined ? undefined : lines.find(l => l.pid === Number(done.newPid) && msg(l) === NEW_PROCESS_MSG)
    if (done !== undefined && took !== undefined) {
      return { readyMs: Number(done.ms), sessions: Number(done.sessions), kept: Number(done.kept), adoptMs: Number(took.ms) }
    }
    if (Date.now() > deadline) throw new Error(`upgrade: no '${done === undefined ? 'upgrade done' : NEW_PROCESS_MSG}' line in ${relay.logPath}`)
    await sleep(50)
  }
}

/** Sends SIGUSR2 and waits for the old process to exit: the span, on the generator's clock too. */
async function upgrade(relay: RelayProcess): Promise<{ from: bigint, until: bigint }> {
  const from = process.hrtime.bigint()
  process.kill(relay.pid, 'SIGUSR2')
  let timer: NodeJS.Timeout | undefined
  const bound = new Promise<'bound'>(resolve => { timer = setTimeout(() => resolve('bound'), EXIT_BOUND_MS) })
  const code = await Promise.race([relay.exited, bound]).finally(() => clearTimeout(timer))
  const until = process.hrtime.bigint()
  if (code === 'bound') throw new Error(`upgrade: the old process had not exited ${EXIT_BOUND_MS / 1000} s after SIGUSR2`)
  if (code !== 0) throw new Error(`upgrade: the old process exited with ${String(code)}`)
  return { from, until }
}

/** The figures of one upgrade, or an error naming what was lost. */
function metricsOf(upgradeMs: number, relay: RelayProcess, log: UpgradeLog, rtt: TraceResult, check: CheckResult | undefined, flow: StreamResult | undefined): Metrics {
  const lost: string[] = []
  if (rtt.errors > 0) lost.push('the ping-pong session was cut (closed or reset)')
  if (rtt.unanswered > 0) lost.push(`the ping-pong session's round trip in flight was still unanswered 5 s after the stop, ${AFTER_MS} ms after the old process exited`)
  if (check !== undefined && check.failed > 0) lost.push(`${check.failed} of ${check.checked} idle sessions no longer echo`)
  if (flow !== undefined && flow.failed + flow.mismatched + flow.short > 0) {
    lost.push(`busy sessions: ${flow.failed} ended, ${flow.mismatched} got a wrong byte back, ${flow.short} did not get every byte back (${flow.received} of ${flow.sent})`)
  }
  if (log.kept > 0) lost.push(`${log.kept} sessions were not taken by the new process`)
  if (lost.length > 0) throw new Error(`upgrade after ${upgradeMs.toFixed(0)} ms: ${lost.join('; ')}`)
  const metrics: Metrics = {
    upgradeMs,
    readyMs: log.readyMs,
    adoptMs: log.adoptMs,
    startMs: relay.startMs,
    // What spawn → ready took beyond starting a process at all: the hand-over itself.
    handoverMs: Math.max(0, log.readyMs - relay.startMs),
    sessionsMoved: log.sessions,
    stallMs: rtt.longestDuringUs / 1000,
    stallFromMs: rtt.longestFromMs,
    p50BeforeUs: rtt.p50BeforeUs,
    roundTripsDuring: rtt.during
  }
  if (flow !== undefined) {
    metrics.verifiedMB = flow.received / 1e6
    metrics.longestGapMs = flow.longestGapUs / 1000
  }
  return metrics
}

/** ka-proxy's own relays; not the pair, whose process is its launcher (its upgrade: the survival lab's). */
const isKaProxy = (name: string): boolean => name.startsWith('ka-proxy') && name !== 'ka-proxy-pair'

export function upgradeCase(name: CaseName, busy: boolean): PerfCase {
  return {
    name,
    title: busy ? 'upgrade (SIGUSR2) with busy sessions' : 'upgrade (SIGUSR2) with idle sessions',
    headline: ['upgradeMs', 'ms SIGUSR2 → old process exit'],
    relays: isKaProxy,
    target: env => env.servers.echo,
    // The ping-pong session too.
    sessions: env => (busy ? env.settings.upgradeBusy : env.upgradeIdleSessions) + 1,
    async measure(env, address, _relayPid, relay) {
      if (relay === null) throw new Error('upgrade: needs a ka-proxy process')
      const s = env.settings
      const held = busy ? null : await env.loadgen.open(address, env.upgradeIdleSessions, s.openWindow)
      let streams: Streams | null = null
      let trace: Trace | null = null
      try {
        if (held !== null && held.result.failed > 0) throw new Error(`upgrade: ${held.result.failed} of ${env.upgradeIdleSessions} sessions failed to open`)
        streams = busy ? env.loadgen.stream(address, s.upgradeBusy, s.upgradeRate) : null
        trace = env.loadgen.trace(address, s.rrSize)
        await sleep(BEFORE_MS)
        const span = await upgrade(relay)
        await sleep(AFTER_MS)
        const rtt = await trace.stop(span.from, span.until)
        trace = null
        const flow = await streams?.stop()
        streams = null
        const check = await held?.check()
        const log = await upgradeLog(relay)
        return metricsOf(Number(span.until - span.from) / 1e6, relay, log, rtt, check, flow)
      } finally {
        // A failed measurement still ends its clients, so none is left running into the next one.
        await trace?.stop(0n, 0n).catch(() => {})
        await streams?.stop().catch(() => {})
        await held?.close()
      }
    }
  }
}
