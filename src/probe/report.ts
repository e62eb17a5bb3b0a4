// What the probe says at the end: a short table of the samples, the timeout found, whether
// keepalive holds, and the ka-proxy settings that fit as a ready command line. --json prints
// the same as one object.

import { formatEndpoint } from '../config/endpoint.ts'
import { PROFILE_NAMES, PROFILES, type ProfileName } from '../keepalive/profiles.ts'
import { detectionBound } from '../keepalive/settings.ts'
import type { ProbeResult, ProbeSettings, Sample } from './runner.ts'

/** Keepalive must stay well under the timeout: idle + interval at most this share of it. */
const WELL_UNDER = 0.6

export interface Recommendation {
  idle: number
  interval: number
  count: number
  /** The named profile these are, when one fits. */
  profile: ProfileName | undefined
  /** Seconds until a dead peer is found: idle + interval × count. */
  deadAfter: number
  /** idle + interval is not well under the timeout (too short for 1 s keepalive steps). */
  tight: boolean
}

/**
 * Settings for a path that keeps idle connections `safe` seconds (the longest idle that
 * survived). The profile with the least keepalive traffic whose idle + interval stays well
 * under it, else values derived from it: first probe at 40 %, retries every 10 %, and as many
 * as bring the dead-peer time to about the timeout itself.
 */
export function recommend(safe: number): Recommendation {
  const limit = WELL_UNDER * safe
  const fitting = PROFILE_NAMES.filter((n) => PROFILES[n].idle + PROFILES[n].interval <= limit)
  fitting.sort((a, b) => PROFILES[b].idle - PROFILES[a].idle || detectionBound(PROFILES[a]) - detectionBound(PROFILES[b]))
  const best = fitting[0]
  if (best !== undefined) {
    const p = PROFILES[best]
    return { idle: p.idle, interval: p.interval, count: p.count, profile: best, deadAfter: detectionBound(p), tight: false }
  }
  const idle = Math.max(1, Math.floor(0.4 * safe))
  const interval = Math.max(1, Math.floor(0.1 * safe))
  const count = Math.min(9, Math.max(3, Math.ceil((safe - idle) / interval)))
  return { idle, interval, count, profile: undefined, deadAfter: idle + interval * count, tight: idle + interval > limit }
}

/** The longest idle the path is known to keep: the bracket's low end, or every survivor's. */
function safeIdle(r: ProbeResult, s: ProbeSettings): number {
  if (r.bracket) return r.bracket.low
  const survived = r.samples.filter((x) => x.alive).map((x) => x.idle)
  return survived.length > 0 ? Math.max(...survived) : s.max
}

/** A listen port that reads as belonging to the target: 5432 → 15432. */
function listenPort(port: number): number {
  return port + 10000 <= 65535 ? port + 10000 : 15432
}

export function commandLine(s: ProbeSettings, rec: Recommendation): string {
  const target = formatEndpoint(s.target.host, s.target.port)
  const keepalive = rec.profile !== undefined ? `--profile ${rec.profile}` : `--idle ${rec.idle} --interval ${rec.interval} --count ${rec.count}`
  return `ka-proxy --listen 127.0.0.1:${listenPort(s.target.port)} --target ${target} ${keepalive}`
}

/** Exit status: 0 something was measured, 1 nothing died up to --max. */
export function exitStatus(r: ProbeResult): number {
  return r.bracket === undefined && r.serverClosedAfter === undefined ? 1 : 0
}

function round1(x: number): number {
  return Math.round(x * 10) / 10
}

export function toJson(r: ProbeResult, s: ProbeSettings): Record<string, unknown> {
  const rec = recommend(safeIdle(r, s))
  return {
    target: formatEndpoint(s.target.host, s.target.port),
    check: s.check.name,
    // As measured (hundredths of a second), so low and high are the idle times of samples.
    idleTimeout: r.bracket ? { low: r.bracket.low, high: r.bracket.high, how: r.bracket.how } : null,
    serverClosedAfter: r.serverClosedAfter ?? null,
    keepaliveHolds: r.keepalive ? r.keepalive.holds : null,
    recommended: { idle: rec.idle, interval: rec.interval, count: rec.count, profile: rec.profile ?? null, deadAfter: rec.deadAfter },
    command: commandLine(s, rec),
    samples: r.samples.map((x) => ({ idle: x.idle, alive: x.alive, how: x.how, phase: x.phase, byServer: x.byServer, ...(x.detail ? { detail: x.detail } : {}) })),
    keepalive: r.keepalive
      ? {
          idle: r.keepalive.settings.idle,
          interval: r.keepalive.settings.interval,
          count: r.keepalive.settings.count,
          native: r.keepalive.native,
          readBack: r.keepalive.applied ?? null,
          samples: r.keepalive.samples.map((x) => ({ idle: x.idle, alive: x.alive, how: x.how, ...(x.detail ? { detail: x.detail } : {}) })),
        }
      : null,
    rttMs: r.rttMs,
    notes: r.notes,
    durationS: round1(r.durationS),
  }
}

function sampleRow(x: Sample): string[] {
  const result = x.alive ? 'alive' : `dead: ${x.how}${x.byServer ? ' (by the server)' : ''}`
  return [x.idle.toFixed(1), result, x.phase, x.detail ?? '']
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]): string => `  ${cells.map((c, i) => c.padEnd(widths[i]!)).join('  ')}`.trimEnd()
  return [line(header), ...rows.map(line)]
}

const HOW_TEXT = {
  silent: 'silently (packets dropped, no reset, no close: a NAT or firewall that forgot the flow)',
  reset: 'with a reset (RST)',
  closed: 'with a close (FIN) from a box on the path',
} as const

export function formatReport(r: ProbeResult, s: ProbeSettings): string {
  const out: string[] = []
  const target = formatEndpoint(s.target.host, s.target.port)
  out.push(`ka-proxy probe: ${target}, check ${s.check.name} (${s.check.describe}); ${round1(r.durationS)} s, first answer in ${r.rttMs} ms`)
  out.push(...table(['idle s', 'result', 'phase', 'detail'], r.samples.map(sampleRow)))
  out.push('')
  const b = r.bracket
  if (b) out.push(`Idle timeout of the path: between ${round1(b.low)} s (survived) and ${round1(b.high)} s (died); flows die ${HOW_TEXT[b.how]}.`)
  else out.push(`Idle timeout of the path: none found: nothing on the path dropped a connection idle up to ${round1(safeIdle(r, s))} s.`)
  if (r.serverClosedAfter !== undefined) {
    out.push(`The server itself closed idle connections after ${round1(r.serverClosedAfter)} s: its own limit, not the path's${s.check.serverLimit ? ` (${s.check.serverLimit})` : ''}.`)
    if (!b) out.push('The path could only be measured up to that limit; to go further, probe against ka-proxy probe-server (or, for PostgreSQL, log in with --dsn).')
  }
  const ka = r.keepalive
  if (ka) {
    const k = ka.settings
    const how = ka.native ? `idle ${k.idle} s, interval ${k.interval} s` : `idle ${k.idle} s (Node's setKeepAlive: interval 1 s, native helper not in use)`
    const idle = ka.samples.length > 0 ? Math.min(...ka.samples.map((x) => x.idle)) : 0
    if (ka.holds) out.push(`Keepalive holds: ${ka.samples.length} connections with keepalive ${how} were alive after ${round1(idle)} s idle.`)
    else {
      const dead = ka.samples.filter((x) => !x.alive)
      out.push(`Keepalive does NOT hold: ${dead.length} of ${ka.samples.length} connections with keepalive ${how} died (${[...new Set(dead.map((x) => x.how))].join(', ')}).`)
      out.push('A box on this path counts only data (an L4/L7 proxy that terminates TCP, or a NAT that ignores keepalive probes):')
      out.push(`such a path needs in-band heartbeats: the application must send something at least every ${round1(Math.max(1, (b?.low ?? 2) / 2))} s.`)
    }
  } else if (b && !s.keepaliveCheck) out.push('Keepalive: not checked (--no-keepalive-check).')
  for (const note of r.notes) out.push(`Note: ${note}.`)
  const rec = recommend(safeIdle(r, s))
  const named = rec.profile !== undefined ? `profile ${rec.profile}: ` : ''
  out.push('')
  out.push(`Recommended: ${named}idle ${rec.idle} s, interval ${rec.interval} s, count ${rec.count} (a dead peer is found after ${rec.deadAfter} s)${ka && !ka.holds ? ', for dead-peer detection only: keepalive does not keep this path open' : ''}`)
  if (rec.tight) out.push('Warning: the timeout is too short for keepalive in whole seconds to stay well under it; use in-band heartbeats.')
  out.push(`  ${commandLine(s, rec)}`)
  return `${out.join('\n')}\n`
}
