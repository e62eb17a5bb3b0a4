// Can this machine run the lab? The answer is one line a person can act on, or null.
// Tests skip with that line; the benchmark prints it and exits.

import { run, runSync } from './exec.ts'
import { NETNS_PREFIX } from './names.ts'

let cached: Promise<string | null> | undefined

async function probe(): Promise<string | null> {
  if (process.platform !== 'linux') return `the survival lab needs Linux network namespaces (this is ${process.platform})`
  if (process.getuid?.() !== 0) return 'the survival lab needs root (network namespaces, nftables, sysctl): run as root'
  for (const [cmd, args, pkg] of [['ip', ['-V'], 'iproute2'], ['nft', ['--version'], 'nftables'], ['ss', ['-V'], 'iproute2']] as const) {
    const r = await run(cmd, args, { allowFail: true }).catch(() => null)
    if (r === null || r.code !== 0) return `the survival lab needs the \`${cmd}\` command: apt-get install -y ${pkg}`
  }
  // Creating and deleting a namespace is the only sure test of netns support (containers may forbid it).
  const ns = `${NETNS_PREFIX}-${process.pid}-0-probe`
  const added = await run('ip', ['netns', 'add', ns], { allowFail: true })
  runSync('ip', ['netns', 'del', ns])
  if (added.code !== 0) return `the survival lab cannot create network namespaces: ${added.stderr.trim()}`
  return null
}

/** Null when the lab can run here, otherwise the reason in one line. Probed once per process. */
export function labUnsupported(): Promise<string | null> {
  cached ??= probe()
  return cached
}
