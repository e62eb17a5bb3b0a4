// Named keepalive presets, from the settings operators already use: the kernel's own
// defaults, the usual database and aggressive-NAT tunings, and SSH's ServerAlive pairs.

import { detectionBound } from './settings.ts'

export interface KeepaliveProfile {
  idle: number
  interval: number
  count: number
  description: string
}

export const PROFILES = {
  kernel: { idle: 7200, interval: 75, count: 9, description: "Linux defaults (what a socket gets without ka-proxy)" },
  database: { idle: 300, interval: 30, count: 5, description: 'long-lived database pools behind ordinary firewalls' },
  'aggressive-nat': { idle: 60, interval: 10, count: 6, description: 'carrier-grade NAT and strict firewalls (the default)' },
  ssh: { idle: 60, interval: 60, count: 5, description: 'like ssh ServerAliveInterval 60, ServerAliveCountMax 5' },
  satellite: { idle: 30, interval: 30, count: 10, description: 'slow, lossy links: like ServerAliveInterval 30 × 10' },
} as const satisfies Record<string, KeepaliveProfile>

export type ProfileName = keyof typeof PROFILES
export const PROFILE_NAMES = Object.keys(PROFILES) as ProfileName[]

function formatSeconds(s: number): string {
  if (s < 120) return `${s} s`
  if (s < 7200) return `${Math.round((s / 60) * 10) / 10} min`
  return `${Math.round((s / 3600) * 10) / 10} h`
}

/** The table `ka-proxy profiles` prints: settings and the detection time each implies. */
export function profilesTable(): string {
  const rows = PROFILE_NAMES.map((name) => {
    const p = PROFILES[name]
    const bound = detectionBound(p)
    return [name, `${p.idle}`, `${p.interval}`, `${p.count}`, `${bound} s (${formatSeconds(bound)})`, p.description]
  })
  const header = ['profile', 'idle s', 'interval s', 'count', 'dead peer found after', '']
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}
