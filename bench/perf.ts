// npm run bench: what a relay costs. Bulk throughput, ping-pong latency and rate, a real
// PostgreSQL client, idle-session memory and open rate, and the relay's CPU per unit of work:
// a direct connection, ka-proxy and its peers side by side, with the same load generator, the
// relays interleaved and each case repeated; and ka-proxy's own upgrade (SIGUSR2) under load,
// against its aims. Prints tables and writes JSON to bench/results/.
// See bench/README.md and --help.

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sleep } from './lab/exec.ts'
import { freePort } from './lab/ports.ts'
import type { Endpoint } from './lab/ss.ts'
import { checkoutRevision } from './perf/baseline.ts'
import { PERF_CASES, idleSessionLimit, type CaseEnv, type Metrics, type PerfCase } from './perf/cases/index.ts'
import { describePinning, pinningUnavailable, pinSelf } from './perf/cpus.ts'
import { compilerUnavailable, LoadGenerator } from './perf/loadgen.ts'
import { baselineName, parseOptions, type PerfSettings } from './perf/options.ts'
import { pgbenchUnavailable, startBenchPostgres } from './perf/postgres.ts'
import { relayLogPath, startRelayProcess } from './perf/relay-process.ts'
import { KEEPALIVE, perfRelay, type PerfRelay } from './perf/relays.ts'
import { cpuBusy } from './perf/procfs.ts'
import { describeLoad, describeRuntime, finishReport, newReport, type RelayReport, type Report } from './perf/report.ts'
import { summarizeMetrics } from './perf/stats.ts'
import { writeResultFiles } from './results.ts'
import { num, renderAims, renderRatios, renderTable } from './perf/table.ts'

/** Pause between measurements, for sockets and processes of the last one to go away. */
const BETWEEN_MS = 300
/**
 * Descriptors an upgrade needs beyond two per session: the new process holds, besides those of the
 * sessions it took, a message's 250 received and the duplicates it is making, and the old one the
 * two messages in flight (src/upgrade.ts).
 */
const UPGRADE_SPARE_FDS = 1200

/** One measurement: a fresh relay process (none for direct), the case through it, then stop. */
async function measureOnce(relay: PerfRelay, c: PerfCase, env: CaseEnv, dir: string): Promise<Metrics> {
  const target = c.target(env)
  if (!relay.proxies) return await c.measure(env, target, null, null)
  const listen: Endpoint = { host: '127.0.0.1', port: await freePort() }
  const relayDir = join(dir, relay.name.replace(/[^\w.-]/g, '_'))
  mkdirSync(relayDir, { recursive: true })
  const command = relay.command({ listen, target, options: KEEPALIVE }, relayDir, c.sessions(env))
  const logPath = relayLogPath(relay.name, relayDir)
  const started = existsSync(logPath) ? statSync(logPath).size : 0
  const proc = await startRelayProcess(relay.name, command, env.settings.pin?.relay ?? null, listen.port, relayDir)
  let metrics: Metrics
  let logFrom = 0
  try {
    await relay.ready?.(proc.logPath, started)
    logFrom = statSync(proc.logPath).size
    metrics = await c.measure(env, listen, proc.pid, proc)
  } finally {
    await proc.stop()
  }
  return relay.fromLog === undefined ? metrics : { ...metrics, ...relay.fromLog(readFileSync(proc.logPath).subarray(logFrom).toString()) }
}

/** Relay order for repetition `rep`: rotated, so no relay always runs first or right after another. */
function rotated<T>(items: readonly T[], rep: number): T[] {
  const k = rep % items.length
  return [...items.slice(k), ...items.slice(0, k)]
}

async function runCases(report: Report, relays: Array<{ relay: PerfRelay, entry: RelayReport }>, env: CaseEnv, dir: string): Promise<void> {
  const s = env.settings
  const width = Math.max(...relays.map(r => r.relay.name.length))
  for (const name of s.cases) {
    const c = PERF_CASES[name]
    console.log(`\n${c.title} (${name})`)
    for (let rep = 0; rep < s.repeat; rep++) {
      for (const { relay, entry } of rotated(relays, rep)) {
        if (c.relays !== undefined && !c.relays(relay.name)) continue
        const result = (entry.cases[name] ??= { measurements: [], summary: {}, errors: [] })
        const label = `  [${rep + 1}/${s.repeat}] ${relay.name.padEnd(width)}`
        try {
          const metrics = await measureOnce(relay, c, env, dir)
          result.measurements.push(metrics)
          const [metric, unit] = c.headline
          console.log(`${label}  ${num(metrics[metric] ?? NaN)} ${unit}`)
        } catch (err) {
          result.errors.push((err as Error).message)
          console.log(`${label}  failed: ${(err as Error).message.split('\n')[0]}`)
        }
        result.summary = summarizeMetrics(result.measurements)
        await sleep(BETWEEN_MS)
      }
    }
  }
}

/**
 * Pairs to compare: ka-proxy with heartbeats and the admin API against without; the working
 * tree's ka-proxy against each revision that ran, or without it, each later revision against the first.
 */
function kaProxyComparisons(report: Report): Array<[string, string]> {
  const names = report.relays.map(r => r.relay)
  const revisions = names.filter(name => name.startsWith('ka-proxy@'))
  // What heartbeats and the admin API cost: the same proxy with and without them.
  const checks: Array<[string, string]> = names.includes('ka-proxy') && names.includes('ka-proxy+checks') ? [['ka-proxy+checks', 'ka-proxy']] : []
  if (names.includes('ka-proxy')) return [...checks, ...revisions.map((rev): [string, string] => ['ka-proxy', rev])]
  return [...checks, ...revisions.slice(1).map((rev): [string, string] => [rev, revisions[0]!])]
}

/** Leaves out the pgbench case, with a note, when PostgreSQL or pgbench is missing. */
async function startPostgresIfNeeded(s: PerfSettings, report: Report): Promise<Awaited<ReturnType<typeof startBenchPostgres>> | null> {
  if (!s.cases.includes('pgbench')) return null
  const missing = await pgbenchUnavailable()
  if (missing === null) return await startBenchPostgres()
  report.notes.push(`pgbench case skipped: ${missing}`)
  s.cases = s.cases.filter(c => c !== 'pgbench')
  return null
}

async function run(): Promise<number> {
  let s: PerfSettings
  try {
    s = parseOptions()
  } catch (err) {
    if (!(err instanceof RangeError)) throw err
    console.error(`bench: ${err.message}`) // a bad flag: one line naming it
    return 2
  }
  const noCompiler = await compilerUnavailable()
  if (noCompiler !== null) {
    console.error(`bench: ${noCompiler}`)
    return 1
  }
  const notes: string[] = []
  if (s.pin !== null) {
    const why = await pinningUnavailable(s.pin)
    if (why === null) await pinSelf(s.pin.load)
    else {
      notes.push(`not pinned: ${why}`)
      s.pin = null
    }
  }
  const report = newReport(s, describePinning(s.pin), await cpuBusy(1000))
  report.notes.push(...notes)
  const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-bench-'))
  let stopServers = async (): Promise<void> => {}
  let stopPostgres = async (): Promise<void> => {}
  try {
    const loadgen = await LoadGenerator.build(dir)
    const baselineRoots = new Map<string, string>()
    for (const rev of s.baselines) baselineRoots.set(baselineName(rev), await checkoutRevision(rev, dir))
    const relays: Array<{ relay: PerfRelay, entry: RelayReport }> = []
    for (const name of s.relays) {
      const relay = perfRelay(name, baselineRoots)
      const skipped = await relay.unavailable()
      const entry: RelayReport = skipped === null ? { relay: name, cases: {} } : { relay: name, skipped, cases: {} }
      report.relays.push(entry)
      if (skipped === null) relays.push({ relay, entry })
    }
    const postgres = await startPostgresIfNeeded(s, report)
    if (postgres !== null) stopPostgres = () => postgres.server.stop()
    const limit = await idleSessionLimit(s.idleSessions)
    if (limit.note !== null && s.cases.includes('idle')) report.notes.push(limit.note)
    const upgradeLimit = await idleSessionLimit(s.idleSessions, UPGRADE_SPARE_FDS)
    if (upgradeLimit.note !== null && s.cases.includes('upgrade-idle')) report.notes.push(`upgrade-idle: ${upgradeLimit.note}, and the new process takes them a message (125) at a time`)
    const servers = await loadgen.startServers()
    stopServers = () => servers.stop()
    const env: CaseEnv = { settings: s, loadgen, servers, postgres: postgres?.endpoint ?? null, idleSessions: limit.sessions, upgradeIdleSessions: upgradeLimit.sessions }
    console.log(`${describeRuntime(report)}\n${report.pinning}\n${describeLoad(report)}`)
    for (const note of report.notes) console.log(note)
    await runCases(report, relays, env, dir)
  } finally {
    await stopServers()
    await stopPostgres()
    rmSync(dir, { recursive: true, force: true })
  }
  finishReport(report)
  console.log(`\n${renderTable(report)}\n`)
  // The working tree's ka-proxy, or the first revision when it was left out.
  const kaProxy = report.relays.find(r => r.relay === 'ka-proxy')?.relay ?? report.relays.find(r => r.relay.startsWith('ka-proxy@'))?.relay
  const targets = kaProxy === undefined ? null : renderRatios(report, kaProxy, 'haproxy', true)
  if (targets !== null) console.log(`${kaProxy} against HAProxy, the targets of the performance issue:\n${targets}\n`)
  for (const [numerator, denominator] of kaProxyComparisons(report)) {
    const ratios = renderRatios(report, numerator, denominator, false)
    if (ratios !== null) console.log(`${numerator} against ${denominator}:\n${ratios}\n`)
  }
  const aims = renderAims(report)
  if (aims !== null) console.log(`The upgrade against its aims (met: every measurement; median: the median only):\n${aims}\n`)
  console.log(describeRuntime(report))
  console.log(`${report.pinning}; ${report.settings.repeat} measurement(s) per cell: median (min–max)`)
  console.log(describeLoad(report))
  for (const note of report.notes) console.log(note)
  for (const path of writeResultFiles(s.outDir, 'perf', report.startedAt, [['json', JSON.stringify(report, null, 2) + '\n']])) console.log(`wrote ${path}`)
  return 0
}

run().then(code => { process.exitCode = code }, (err: Error) => {
  console.error(`bench: ${err.stack ?? err.message}`)
  process.exitCode = 1
})
