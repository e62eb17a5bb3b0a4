// npm run bench:survival: how relays keep idle TCP sessions alive through an aggressive NAT, how
// fast they notice dead peers, and whether their sessions survive the relay's own upgrade,
// measured in network namespaces on this machine (as root).
// Prints a table and writes JSON and an SVG chart to bench/results/. See --help.

import {
  blackholeTarget, clientVanishes, createLab, createWorkbench, dataTimeout, DataTimeoutBox, labUnsupported, natFlush, ownUpgrade,
  relayByName, survival, type Entrant, type Outcome, type RelayOptions, type Workbench
} from './lab/index.ts'
import { parseOptions, type BenchSettings, type ScenarioName } from './survival/options.ts'
import { newReport, summarize, type Report } from './survival/report.ts'
import { renderTable } from './survival/table.ts'
import { renderChart } from './survival/chart.ts'
import { staggerIdle } from '../src/probe/schedule.ts'
import { writeResultFiles } from './results.ts'

/**
 * ka-proxy (single or paired) gets the chosen TCP_USER_TIMEOUT; HAProxy and socat the peers' one
 * (none by default). HAProxy gets a hard-stop-after, for its reload; the pair its heartbeat and window.
 */
function relayOptions(s: BenchSettings, relay: string): RelayOptions {
  const kaProxy = relay === 'ka-proxy' || relay === 'ka-proxy-pair'
  const userTimeout = kaProxy ? s.userTimeout : relay === 'haproxy' || relay === 'socat' ? s.peerUserTimeout : undefined
  return {
    target: s.keepalive,
    client: s.clientKeepalive,
    ...(userTimeout === undefined ? {} : { userTimeout }),
    ...(relay === 'haproxy' ? { hardStopAfter: s.hardStopAfter } : {}),
    ...(relay === 'ka-proxy-pair' ? { pairHeartbeat: s.pairHeartbeat, ...(s.resumeWindow === undefined ? {} : { resumeWindow: s.resumeWindow }) } : {})
  }
}

function describe(scenario: ScenarioName, s: BenchSettings): string {
  switch (scenario) {
    case 'survival': return `survival: ${s.sessions} sessions per relay, each idle for its own time up to ${s.idleMax} s, then checked (NAT timeout ${s.natTimeout} s)`
    case 'blackhole': return `blackhole while idle: cut the server, wait up to ${s.window} s`
    case 'inflight': return `blackhole with data in flight: cut the server, send, wait up to ${s.window} s`
    case 'vanish': return `client vanishes: cut the app side, wait up to ${s.window} s`
    case 'upgrade': return `each relay's own upgrade or restart, sessions checked ${s.upgradeWait} s after`
    case 'box': return `a box that times out on data after ${s.boxTimeout} s: idle ${s.boxIdle} s through it, then checked`
    case 'flush': return `the NAT forgets everything (conntrack -F) after ${s.flushAfter} s idle; checked at once, waiting up to ${s.window} s`
  }
}

function runScenario(wb: Workbench, scenario: ScenarioName, s: BenchSettings): Promise<Outcome[]> {
  switch (scenario) {
    case 'survival': return survival(wb, staggerIdle(0, s.idleMax, s.sessions, { spacing: 'even' }))
    case 'blackhole': return blackholeTarget(wb, { inFlight: false, windowSeconds: s.window })
    case 'inflight': return blackholeTarget(wb, { inFlight: true, windowSeconds: s.window })
    case 'vanish': return clientVanishes(wb, s.window)
    case 'upgrade': return ownUpgrade(wb, s.upgradeWait)
    case 'box': return dataTimeout(wb, new DataTimeoutBox(wb.lab, s.boxTimeout), s.boxIdle)
    case 'flush': return natFlush(wb, s.flushAfter, s.window)
  }
}

async function measure(report: Report, entrants: Entrant[]): Promise<void> {
  const s = report.settings
  const lab = await createLab({ natTimeout: s.natTimeout })
  try {
    const wb = await createWorkbench(lab, entrants, s.sessions)
    for (const scenario of s.scenarios) {
      const started = Date.now()
      process.stdout.write(`${describe(scenario, s)} ... `)
      for (const outcome of await runScenario(wb, scenario, s)) {
        const entry = report.relays.find(r => r.relay === outcome.relay)
        if (entry !== undefined) entry.results[scenario] = summarize(outcome)
      }
      process.stdout.write(`${((Date.now() - started) / 1000).toFixed(0)} s\n`)
    }
  } finally {
    await lab.destroy()
  }
}

function writeResults(report: Report): string[] {
  return writeResultFiles(report.settings.outDir, 'survival', report.startedAt, [
    ['json', JSON.stringify(report, null, 2) + '\n'],
    ['svg', renderChart(report)]
  ])
}

async function run(): Promise<number> {
  const settings = parseOptions()
  const unsupported = await labUnsupported()
  if (unsupported !== null) {
    console.log(`bench:survival skipped: ${unsupported}`)
    return 0
  }
  const report = newReport(settings)
  const entrants: Entrant[] = []
  for (const name of settings.relays) {
    const relay = relayByName(name)
    const skipped = await relay.unavailable()
    if (skipped !== null) {
      report.relays.push({ relay: name, skipped, results: {} })
      continue
    }
    const options = relayOptions(settings, name)
    entrants.push({ relay, options })
    report.relays.push({ relay: name, options, results: {} })
  }
  await measure(report, entrants)
  console.log()
  console.log(renderTable(report))
  console.log()
  for (const path of writeResults(report)) console.log(`wrote ${path}`)
  return 0
}

run().then(code => { process.exitCode = code }, (err: Error) => {
  console.error(`bench:survival: ${err.message}`)
  process.exitCode = 1
})
