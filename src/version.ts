// The package version and the Node lines it supports, read once from package.json (one level
// up from both src/ and dist/).

import { readFileSync } from 'node:fs'

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string
  engines: { node: string }
}

export const VERSION: string = pkg.version

/** The Node.js major lines package.json's engines names (`^22.12.0 || ^24.0.0 || ^26.0.0` → 22, 24, 26). */
export const SUPPORTED_NODE_LINES: readonly number[] = [...pkg.engines.node.matchAll(/\^(\d+)\./g)].map((m) => Number(m[1]))

/** Whether this Node is one of the supported lines, as a phrase for doctor. */
export function nodeSupport(version = process.version): string {
  const major = Number(/^v?(\d+)/.exec(version)?.[1])
  const lines = SUPPORTED_NODE_LINES.join(', ')
  return SUPPORTED_NODE_LINES.includes(major) ? `a supported line (${lines})` : `NOT a supported line (supported: ${lines}); it may work, but is not tested for every release`
}
