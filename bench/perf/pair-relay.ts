// A ka-proxy pair as one relay process for the performance bench: two ka-proxies in a row over
// loopback, near → far → target, each with its own Node process (as deployed, one next to the app,
// one next to the server), started by this launcher so that the bench sees one process tree
// (its CPU time and memory are both ends') and stops both with its process group.
//   node --import tsx bench/perf/pair-relay.ts LISTEN TARGET [ka-proxy settings...]
// The far end listens for the link on a port of the kernel's choosing (read from its "listening"
// line), then the near end starts on LISTEN. Both write their JSON log lines to this stdout.

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { kaProxyEntryArgs, parseJson } from '../lab/relays/ka-proxy.ts'
import { REPO_ROOT } from '../lab/node-script.ts'

const [listen, target, ...settings] = process.argv.slice(2)
if (listen === undefined || target === undefined) throw new Error('usage: pair-relay.ts LISTEN TARGET [ka-proxy settings...]')

const dir = mkdtempSync(join(tmpdir(), 'ka-pair-relay-'))
const secret = join(dir, 'pair.key')
writeFileSync(secret, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 })
const children: ChildProcess[] = []

/** One end: its log lines pass through; resolves with its "listening" line. */
function startEnd(args: string[]): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [...kaProxyEntryArgs('src'), ...args, ...settings, '--pair-secret-file', secret], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(child)
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', line => {
      process.stdout.write(`${line}\n`)
      const entry = parseJson(line)
      if (entry?.msg === 'listening') resolve(entry)
    })
    child.once('exit', code => {
      reject(new Error(`ka-proxy exited (${code}) before listening`))
      // One end gone: the pair is no relay any more.
      for (const c of children) c.kill('SIGTERM')
    })
  })
}

function exited(child: ChildProcess): Promise<number | null> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve(child.exitCode) : new Promise(resolve => child.once('exit', resolve))
}

process.on('SIGTERM', () => {
  for (const c of children) c.kill('SIGTERM')
  void Promise.all(children.map(exited)).then(codes => {
    rmSync(dir, { recursive: true, force: true })
    process.exit(codes.every(c => c === 0) ? 0 : 1)
  })
})

const far = await startEnd(['--pair-listen', '127.0.0.1:0', '--target', target])
await startEnd(['--listen', listen, '--pair-connect', String(far.address)])
