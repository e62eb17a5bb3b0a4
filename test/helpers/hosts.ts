// Names for the tests in /etc/hosts (root only): a test adds its own name, may point it
// elsewhere, and the name is removed when the test ends. The resolver reads the file on
// every lookup, as it does for DNS answers that change.

import { readFileSync, writeFileSync } from 'node:fs'
import type { Test } from 'tap'

const HOSTS = '/etc/hosts'

/** Null when this process may edit /etc/hosts, else why not. */
export function hostsUnwritable(): string | null {
  return process.getuid?.() === 0 ? null : 'needs root: adds a name to /etc/hosts for the test'
}

function withoutName(text: string, name: string): string[] {
  return text.split('\n').filter((l) => !l.trimEnd().endsWith(` ${name}`))
}

/** Makes `name` resolve to `addresses`, in that order (replacing what it had). */
export function pointName(name: string, addresses: readonly string[]): void {
  const lines = withoutName(readFileSync(HOSTS, 'utf8'), name)
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop()
  writeFileSync(HOSTS, `${[...lines, ...addresses.map((a) => `${a} ${name}`)].join('\n')}\n`)
}

/** A name unique to this test process, resolving to `addresses`; removed at teardown. */
export function testName(t: Test, label: string, addresses: readonly string[]): string {
  const name = `ka-proxy-${label}-${process.pid}.test`
  pointName(name, addresses)
  t.teardown(() => writeFileSync(HOSTS, `${withoutName(readFileSync(HOSTS, 'utf8'), name).join('\n').trimEnd()}\n`))
  return name
}
