// `ka-proxy upgrade`: the upgrade as a command that waits for its outcome, for systemd's
// ExecReload= (so `systemctl reload` fails when the upgrade fails, with its reason) and for
// scripts. It sends SIGUSR2 to the running process (--pid, --pid-file, or $MAINPID, which
// systemd sets for ExecReload=) and waits for one answer: exit 0 once a new process serves,
// 1 with the one-line reason when the running process kept serving.
//
// The answer comes over a Unix stream socket in the abstract namespace named after the running
// process's pid (no file to create where ProtectSystem=strict leaves nothing writable, nothing
// left behind). This command listens on it before it signals; the running process connects once
// the attempt has an outcome (after it told systemd MAINPID=, so systemd has followed the new
// process before the reload ends) and writes one JSON line. Nobody listening: nothing is sent.
// Any local process of the same network namespace could connect to that name: the answer only
// reports, it changes nothing in the proxy.

import net from 'node:net'
import { readFileSync } from 'node:fs'
import { once } from 'node:events'
import { ConfigError, KaError } from './errors.ts'
import { READY_BOUND_MS } from './upgrade.ts'

/** What the running process answers. */
export type UpgradeAnswer = { ok: true; pid: number; sessions: number; stayed: number; ms: number } | { ok: false; reason: string }

/** Longer than any attempt: the new process's bound to report ready, and the hand-over around it. */
const ANSWER_BOUND_MS = 3 * READY_BOUND_MS
const POLL_MS = 100
const EXITED_GRACE_MS = 1000

function channel(pid: number): string {
  return `\0ka-proxy-upgrade-${pid}`
}

/** The running process's side: tells a waiting `ka-proxy upgrade` the outcome; never throws. */
export function answerUpgrade(answer: UpgradeAnswer): void {
  const socket = net.connect(channel(process.pid))
  // ECONNREFUSED: nobody waits (a plain kill -USR2). Either way nothing more to do.
  socket.on('error', () => socket.destroy())
  socket.end(`${JSON.stringify(answer)}\n`)
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** The process to upgrade: --pid, else the pid in --pid-file, else $MAINPID. */
export function upgradeTarget(pid: unknown, pidFile: string | undefined, mainPid: string | undefined): number {
  let raw: string
  let key: string
  if (pid !== undefined) [raw, key] = [String(pid), '--pid']
  else if (pidFile !== undefined) {
    try {
      raw = readFileSync(pidFile, 'utf8').trim()
    } catch (err) {
      throw new ConfigError('--pid-file', `cannot read ${pidFile} (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
    }
    key = '--pid-file'
  } else if (mainPid !== undefined && mainPid !== '') [raw, key] = [mainPid, 'MAINPID']
  else throw new ConfigError('--pid', 'the upgrade command needs the running process: --pid PID, --pid-file FILE, or $MAINPID (systemd sets it for ExecReload=)')
  const n = Number(raw)
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < 2) throw new ConfigError(key, `must be a process id (got ${JSON.stringify(raw)})`)
  return n
}

/** Signals `pid` and waits for the outcome: 0 once a new process serves; a KaError with the reason if not. */
export async function runUpgrade(pid: number, write: (line: string) => void): Promise<number> {
  if (!alive(pid)) throw new KaError('KA_ERR_UPGRADE', `upgrade: no process ${pid}`)
  const server = net.createServer()
  const answered = new Promise<string>((resolve) => {
    server.on('connection', (socket) => {
      let text = ''
      socket.setEncoding('utf8').on('data', (chunk: string) => (text += chunk))
      socket.on('error', () => socket.destroy())
      socket.on('end', () => resolve(text))
    })
  })
  server.listen(channel(pid))
  try {
    await once(server, 'listening')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new KaError('KA_ERR_UPGRADE', code === 'EADDRINUSE' ? `upgrade: another ka-proxy upgrade is already waiting for pid ${pid}` : `upgrade: cannot wait for an answer (${code ?? String(err)})`)
  }
  try {
    process.kill(pid, 'SIGUSR2')
    const deadline = Date.now() + ANSWER_BOUND_MS
    let text: string | undefined
    answered.then((t) => (text = t), () => {})
    while (text === undefined) {
      if (!alive(pid)) {
        // It may have answered and exited at once (nothing left to drain): the answer can still
        // be on its way through this process's event loop.
        await Promise.race([answered, new Promise((r) => setTimeout(r, EXITED_GRACE_MS))])
        if (text === undefined) throw new KaError('KA_ERR_UPGRADE', `upgrade: process ${pid} exited without an answer`)
        break
      }
      if (Date.now() >= deadline) throw new KaError('KA_ERR_UPGRADE', `upgrade: no answer from process ${pid} within ${ANSWER_BOUND_MS / 1000} s (is it a ka-proxy of this release or later?)`)
      await new Promise((r) => setTimeout(r, POLL_MS))
    }
    let answer: UpgradeAnswer
    try {
      answer = JSON.parse(text) as UpgradeAnswer
    } catch {
      throw new KaError('KA_ERR_UPGRADE', `upgrade: an answer that is not understood: ${JSON.stringify(text.slice(0, 200))}`)
    }
    if (answer.ok !== true) throw new KaError('KA_ERR_UPGRADE', `upgrade failed, pid ${pid} still serves: ${String(answer.reason)}`)
    write(`ka-proxy: upgraded: pid ${answer.pid} serves (${answer.sessions} sessions moved, ${answer.stayed} stay in pid ${pid} until they end; ${answer.ms} ms)\n`)
    return 0
  } finally {
    server.close()
  }
}
