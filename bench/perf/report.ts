// The result of one performance run, as written to JSON: settings, the machine and how busy it
// was, and per relay and case every measurement and its summary.

import { cpus, loadavg, release, totalmem } from 'node:os'
import type { CaseName, PerfSettings } from './options.ts'
import type { Summary } from './stats.ts'

export interface CaseResult {
  measurements: Array<Record<string, number>>
  summary: Record<string, Summary>
  /** Measurements that failed, with why. */
  errors: string[]
}

export interface RelayReport {
  relay: string
  /** Why the relay was left out (not installed, ...). */
  skipped?: string
  cases: Partial<Record<CaseName, CaseResult>>
}

export interface Report {
  startedAt: string
  finishedAt?: string
  settings: PerfSettings
  machine: { kernel: string, node: string, cpuModel: string, cpus: number, memoryGiB: number }
  /**
   * How busy the machine was: load averages (1, 5, 15 min) when the run started and ended, and
   * per CPU the busy fraction of one second just before it started. Other work skews the figures.
   * (The idle case through socat leaves thousands of exiting processes in the load average.)
   */
  load: { start: number[], end?: number[], cpuBusyBefore: number[] }
  pinning: string
  loadGenerator: string
  /** Cases left out, limits applied, and the like. */
  notes: string[]
  relays: RelayReport[]
}

export function newReport(settings: PerfSettings, pinning: string, cpuBusyBefore: number[]): Report {
  return {
    startedAt: new Date().toISOString(),
    settings,
    machine: {
      kernel: release(),
      node: process.version,
      cpuModel: cpus()[0]?.model ?? 'unknown',
      cpus: cpus().length,
      memoryGiB: Math.round(totalmem() / 1024 ** 3)
    },
    load: { start: loadavg(), cpuBusyBefore },
    pinning,
    loadGenerator: 'bench/perf/loadgen.c, compiled with cc -O2 at bench time, one thread, epoll',
    notes: [],
    relays: []
  }
}

export function describeLoad(report: Report): string {
  const avg = (l: number[]): string => l.map(x => x.toFixed(2)).join(', ')
  const busy = report.load.cpuBusyBefore.map((b, i) => `CPU ${i} ${Math.round(b * 100)} %`).join(', ')
  const end = report.load.end === undefined ? '' : `; at end ${avg(report.load.end)}`
  return `busy in the second before the start: ${busy}; load average at start ${avg(report.load.start)}${end}`
}

/**
 * What the figures were measured on: ka-proxy's relays run on this bench's own Node, and its
 * lines differ (V8 takes longer to optimize ka-proxy's open path on 24 and 26 than on 22: see
 * bench/README, "Open rate").
 */
export function describeRuntime(report: Report): string {
  const { node, kernel, cpus, cpuModel } = report.machine
  return `ka-proxy on Node ${node} (the bench's own: run it with another node for another line); Linux ${kernel}, ${cpus} × ${cpuModel}`
}

export function finishReport(report: Report): void {
  report.finishedAt = new Date().toISOString()
  report.load.end = loadavg()
}
