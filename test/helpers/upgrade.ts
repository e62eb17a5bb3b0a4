// For the upgrade tests: an entry point of the test's own (so a test can put another "release" on
// disk before SIGUSR2), a proxy started through it whose every process (old and new share one
// stdout) is killed at the end, and small clients.

import type { Test } from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import type { Socket } from 'node:net'
import { request } from 'undici'
import { collect, connect, freePort, manualTarget, sleep, waitFor } from './net.ts'
import { payload, writeChunked } from './payload.ts'
import { spawnProxy, type Entry, type RunningProxy } from './cli.ts'
import type { LogLine } from './proxy.ts'
import { loadNative, type NativeAddon } from '../../src/native.ts'
import { pairSecretFile } from './pair.ts'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const MAIN = join(ROOT, 'src/main.ts')
export const NATIVE = join(ROOT, 'src/native.ts')

export const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export type TestEntry = Entry & { install(code: string): void; real(): void }

/** `dir`/`name`.mjs, importing the real entry point until `install` puts other code there. */
export function entryFile(t: Test, dir: string, name: string): TestEntry {
  const main = join(dir, `${name}.mjs`)
  const install = (code: string): void => writeFileSync(main, code)
  const real = (): void => install(`await import(${JSON.stringify(MAIN)})\n`)
  real()
  t.teardown(() => rmSync(main, { force: true }))
  return { main, cwd: ROOT, install, real }
}

/** Every process an upgrade started writes to the same stdout: kills whichever is left at the end. */
export function killAllAtEnd(t: Test, proxy: RunningProxy): void {
  t.teardown(() => {
    for (const pid of new Set(proxy.logs.map((l) => l.pid))) {
      try {
        if (typeof pid === 'number') process.kill(pid, 'SIGKILL')
      } catch {
        // exited already
      }
    }
  })
}

export interface Started {
  proxy: RunningProxy
  port: number
  /** The first line after the `from`-th whose message starts with `msg`. */
  since(from: number, msg: string): LogLine | undefined
}

export async function start(t: Test, entry: Entry, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Started> {
  const port = await freePort()
  const proxy = spawnProxy(['--listen', `127.0.0.1:${port}`, ...args], env, entry)
  killAllAtEnd(t, proxy)
  await proxy.line((l) => l.msg === 'listening', 30_000)
  const since = (from: number, msg: string): LogLine | undefined => proxy.logs.slice(from).find((l) => l.msg.startsWith(msg))
  return { proxy, port, since }
}

export async function roundTrip(s: Socket, text: string): Promise<string> {
  s.write(text)
  const [data] = (await once(s, 'data')) as [Buffer]
  return String(data)
}

/**
 * Connects, sends, reads the echo, closes; over and over until `stop`, from `n` clients at once,
 * with a short pause between round trips (the new process must start on a busy 2-core machine).
 */
export async function connectLoop(port: number, n: number, stop: () => boolean): Promise<{ ok: number; errors: string[] }> {
  const out = { ok: 0, errors: [] as string[] }
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      for (let k = 0; !stop(); k++) {
        try {
          const s = await connect(port)
          const text = `c${i}-${k}`
          const got = await roundTrip(s, text)
          if (got !== text) out.errors.push(`echo ${JSON.stringify(got)} for ${text}`)
          else out.ok++
          s.end()
          await once(s, 'close')
        } catch (err) {
          out.errors.push((err as NodeJS.ErrnoException).code ?? String(err))
        }
        await sleep(5)
      }
    }),
  )
  return out
}

export async function healthy(port: number): Promise<boolean> {
  const res = await request(`http://127.0.0.1:${port}/healthz`)
  await res.body.dump()
  return res.statusCode === 200
}

/**
 * What every upgrade test file starts with: the native helper, which the upgrade needs (a missing
 * build is an error, not a skip), and a directory of its own, removed at the end of the file.
 */
export function upgradeTestSetup(t: Test, name: string): { native: NativeAddon; dir: string } {
  const load = loadNative()
  if (!load.ok) throw new Error(`native helper must be built for these tests: ${load.reason}`)
  const dir = mkdtempSync(join(tmpdir(), `ka-proxy-${name}-`))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return { native: load.binding, dir }
}

/** A proxy started through its own entry point (`name`), with one session through it to a target the test drives. */
export async function oneSession(t: Test, dir: string, name: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ port: number; entry: TestEntry; proxy: RunningProxy; client: Socket; server: Socket; target: { port: number; next(): Promise<Socket> } }> {
  const target = await manualTarget(t)
  const port = await freePort()
  const entry = entryFile(t, dir, name)
  const proxy = spawnProxy(['--listen', `127.0.0.1:${port}`, '--target', `127.0.0.1:${target.port}`, ...args], env, entry)
  killAllAtEnd(t, proxy)
  await proxy.line((l) => l.msg === 'listening', 30_000)
  const client = await connect(port)
  const server = await target.next()
  return { port, entry, proxy, client, server, target }
}

/**
 * 8 MiB each way through a session, in writes of 4 KiB (many pump rounds, so a hand-over falls in
 * the middle); `whole()` waits for both ends and says whether each got every byte, in order, once.
 */
export function twoWayStreams(client: Socket, server: Socket): { whole(): Promise<{ arrived: boolean; up: boolean; down: boolean }> } {
  const up = payload(8 << 20)
  const down = payload(8 << 20)
  const atServer = collect(server)
  const atClient = collect(client)
  const written = Promise.all([writeChunked(client, up, { end: false, maxChunk: 4096 }), writeChunked(server, down, { end: false, maxChunk: 4096 })])
  return {
    async whole() {
      await written
      const arrived = await waitFor(() => atServer.length() >= up.length && atClient.length() >= down.length, 30_000)
      return { arrived, up: atServer.data().equals(up), down: atClient.data().equals(down) }
    },
  }
}

export interface PairProcesses {
  near: RunningProxy
  far: RunningProxy
  nearPort: number
  nearAdmin: number
  farAdmin: number
  /** Their entry points, for a test to put another release on disk. */
  entries: { near: TestEntry; far: TestEntry }
}

/**
 * Paired mode in real processes, each started through an entry point of its own in `dir`: a far
 * end (pair address, admin API) relaying to `targetPort`, and a near end (listener, admin API)
 * joined to it, directly or through `through(farPort)`; heartbeat 1 s, keepalive 45/6/4.
 */
export async function startPairProcesses(t: Test, dir: string, targetPort: number, name: string, through?: (farPort: number) => Promise<number>): Promise<PairProcesses> {
  const [farPort, nearPort, nearAdmin, farAdmin] = await Promise.all([freePort(), freePort(), freePort(), freePort()])
  const secret = pairSecretFile()
  const common = ['--pair-secret-file', secret, '--pair-heartbeat', '1', '--idle', '45', '--interval', '6', '--count', '4']
  const entries = { near: entryFile(t, dir, `${name}-near`), far: entryFile(t, dir, `${name}-far`) }
  const far = spawnProxy(['--pair-listen', `127.0.0.1:${farPort}`, '--target', `127.0.0.1:${targetPort}`, '--admin', `127.0.0.1:${farAdmin}`, ...common], {}, entries.far)
  killAllAtEnd(t, far)
  await far.line((l) => l.msg === 'listening', 30_000)
  const via = through === undefined ? farPort : await through(farPort)
  const near = spawnProxy(['--listen', `127.0.0.1:${nearPort}`, '--pair-connect', `127.0.0.1:${via}`, '--admin', `127.0.0.1:${nearAdmin}`, ...common], {}, entries.near)
  killAllAtEnd(t, near)
  await near.line((l) => l.msg === 'pair link up', 30_000)
  return { near, far, nearPort, nearAdmin, farAdmin, entries }
}

/** SIGUSR2 to `end`'s process `pid`; its `upgrade done` line once it has exited and the new one took over. */
export async function upgradeProcess(end: RunningProxy, pid: number): Promise<LogLine> {
  const mark = end.logs.length
  const after = (l: LogLine): boolean => end.logs.indexOf(l) >= mark
  process.kill(pid, 'SIGUSR2')
  const done = await end.line((l) => after(l) && l.pid === pid && l.msg.startsWith('upgrade '), 30_000)
  if (!done.msg.startsWith('upgrade done')) throw new Error(`upgrade of ${pid} failed: ${String(done.reason ?? done.msg)}`)
  await end.line((l) => after(l) && l.pid === Number(done.newPid) && l.msg.startsWith('upgrade: took over'), 10_000)
  if (!(await waitFor(() => !alive(pid), 10_000))) throw new Error(`the old process ${pid} did not exit`)
  return done
}
