// sd_notify on a real Unix datagram socket, bound the way systemd binds NOTIFY_SOCKET (a path, or
// an abstract '@' name) with SO_PASSCRED, so each datagram comes with its sender's pid: systemd's
// NotifyAccess=main accepts only the main process's. Node has no Unix datagram sockets, so the
// receiving end is a few lines of python3.

import t, { type Test } from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { ServiceNotifier } from '../src/notify.ts'
import { loadNative } from '../src/native.ts'
import { runCliAsync, spawnProxy } from './helpers/cli.ts'
import { freePort } from './helpers/net.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'

const RECEIVER = `
import json, socket, struct, sys
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + name[1:] if name.startswith("@") else name)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print(json.dumps({"bound": True}), flush=True)
while True:
    data, anc, flags, addr = s.recvmsg(8192, socket.CMSG_SPACE(12))
    pid = None
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", payload[:12])[0]
    print(json.dumps({"pid": pid, "message": data.decode()}), flush=True)
`

const skip = missingPrerequisite(spawnSync('python3', ['-c', 'pass']).status !== 0 && 'python3 is needed to receive Unix datagrams')
if (!skip) {
  const load = loadNative()
  if (!load.ok) throw new Error(`native helper must be built for these tests: ${load.reason}`)
}

interface Datagram {
  pid: number
  message: string
}

interface Receiver {
  socket: string
  next(timeoutMs?: number): Promise<Datagram>
  /** Waits for a datagram whose message has this line. */
  until(line: string, timeoutMs?: number): Promise<Datagram>
}

const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-notify-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

async function receiver(t: Test, socket: string): Promise<Receiver> {
  const proc: ChildProcess = spawn('python3', ['-c', RECEIVER, socket], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => void proc.kill())
  const queue: Datagram[] = []
  const waiters: Array<() => void> = []
  let bound!: () => void
  const ready = new Promise<void>((resolve) => (bound = resolve))
  createInterface({ input: proc.stdout! }).on('line', (text) => {
    const msg = JSON.parse(text) as Datagram & { bound?: boolean }
    if (msg.bound) return bound()
    queue.push(msg)
    for (const w of waiters.splice(0)) w()
  })
  await ready
  const next = (timeoutMs = 10_000): Promise<Datagram> =>
    new Promise((resolve, reject) => {
      const take = (): void => {
        const d = queue.shift()
        if (d) {
          clearTimeout(timer)
          resolve(d)
        } else waiters.push(take)
      }
      const timer = setTimeout(() => reject(new Error(`no datagram on ${socket} within ${timeoutMs} ms`)), timeoutMs)
      take()
    })
  return {
    socket,
    next,
    async until(line, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const d = await next(Math.max(1, deadline - Date.now()))
        if (d.message.split('\n').includes(line)) return d
      }
    },
  }
}

function lines(d: Datagram): string[] {
  return d.message.split('\n')
}

function warnings(): { log: Array<{ fields: object; msg: string }>; warn: (fields: object, msg: string) => void } {
  const log: Array<{ fields: object; msg: string }> = []
  return { log, warn: (fields: object, msg: string) => void log.push({ fields, msg }) }
}

const abstractName = `@ka-proxy-test-${process.pid}`

t.test('ready, reloading, stopping and status reach a path socket and an abstract one, from this pid', { skip }, async (t) => {
  for (const socket of [join(dir, 'notify.sock'), abstractName]) {
    const r = await receiver(t, socket)
    const w = warnings()
    const n = new ServiceNotifier(w, { socket })
    n.ready('serving 1 route: a')
    let d = await r.next()
    t.equal(d.pid, process.pid, `${socket}: sent by this process (what NotifyAccess=main checks)`)
    t.same(lines(d), ['READY=1', 'STATUS=serving 1 route: a'], `${socket}: READY=1 with its status`)
    const before = process.hrtime.bigint() / 1000n
    n.reloading('reloading x.yaml')
    d = await r.next()
    const [reloading, monotonic, status] = lines(d)
    t.equal(reloading, 'RELOADING=1')
    const usec = BigInt(/^MONOTONIC_USEC=(\d+)$/.exec(monotonic ?? '')?.[1] ?? '0')
    t.ok(usec >= before && usec <= process.hrtime.bigint() / 1000n, 'MONOTONIC_USEC is CLOCK_MONOTONIC now, in microseconds')
    t.equal(status, 'STATUS=reloading x.yaml')
    n.stopping('shutting down\nFAKE=1')
    d = await r.next()
    t.same(lines(d), ['STOPPING=1', 'STATUS=shutting down FAKE=1'], 'a newline in the status cannot add a line')
    n.status('x'.repeat(5000))
    d = await r.next()
    t.equal(d.message.length, 'STATUS='.length + 1000, 'status cut to 1000 characters')
    t.same(w.log, [], 'nothing to warn about')
  }
})

t.test('without NOTIFY_SOCKET nothing is sent and nothing is said', { skip }, async (t) => {
  const w = warnings()
  let sent = 0
  const n = new ServiceNotifier(w, { socket: undefined, send: () => void sent++ })
  n.ready('x')
  n.stopping('y')
  t.equal(sent, 0)
  t.same(w.log, [])
})

t.test('a socket nobody listens on, a relative path, a path too long: one warning each, no throw', { skip }, async (t) => {
  const cases: Array<[string, RegExp]> = [
    [join(dir, 'nobody.sock'), /ENOENT|ECONNREFUSED/],
    ['relative.sock', /absolute path or start with @/],
    [`/${'x'.repeat(200)}`, /up to 108 bytes/],
  ]
  for (const [socket, why] of cases) {
    const w = warnings()
    const n = new ServiceNotifier(w, { socket })
    t.doesNotThrow(() => n.ready('x'), `${socket.slice(0, 30)}: no throw`)
    t.equal(w.log.length, 1, 'one warning')
    t.match(w.log[0]?.msg, /sd_notify failed: READY=1 not delivered/)
    t.match(JSON.stringify(w.log[0]?.fields), why, 'the warning says why')
  }
})

t.test('the running proxy: READY=1 once it accepts, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM', { skip }, async (t) => {
  const r = await receiver(t, join(dir, 'proxy.sock'))
  const port = await freePort()
  const config = join(dir, 'ka.yaml')
  writeFileSync(config, `routes:\n  - name: db\n    listen: 127.0.0.1:${port}\n    target: 127.0.0.1:9\n`)
  const proxy = spawnProxy(['--config', config], { NOTIFY_SOCKET: r.socket })
  t.teardown(() => void proxy.proc.kill('SIGKILL'))
  const ready = await r.next(20_000)
  t.equal(ready.pid, proxy.proc.pid, 'sent by the proxy process itself')
  t.same(lines(ready), ['READY=1', 'STATUS=serving 1 route: db'])
  // The listener was up when READY=1 was sent: the connection is accepted (and then reset, its
  // target refusing; on a busy machine that RST can come before the connect completes).
  const client = net.connect(port, '127.0.0.1')
  // (once() rejects on 'error': that rejection is the outcome, not a failure of the test.)
  client.on('error', () => {})
  const accepted = await once(client, 'connect').then(() => 'connect', (e: NodeJS.ErrnoException) => e.code)
  t.ok(accepted === 'connect' || accepted === 'ECONNRESET', `accepted at once (${accepted}), not refused`)
  client.destroy()
  proxy.proc.kill('SIGHUP')
  const reloading = await r.next()
  t.equal(lines(reloading)[0], 'RELOADING=1', 'reload begins')
  const reloaded = await r.next()
  t.same(lines(reloaded), ['READY=1', 'STATUS=serving 1 route: db'], 'and ends with READY=1')
  proxy.proc.kill('SIGTERM')
  const stopping = await r.until('STOPPING=1')
  t.match(lines(stopping)[1], /^STATUS=shutting down on SIGTERM: draining 0 sessions$/)
  t.equal(await proxy.exited, 0, 'clean exit')
})

t.test('NOTIFY_SOCKET without the native helper: one warning naming it', { skip }, async (t) => {
  const port = await freePort()
  const proxy = spawnProxy(['--listen', `127.0.0.1:${port}`, '--target', '127.0.0.1:9'], {
    NOTIFY_SOCKET: join(dir, 'unused.sock'),
    KA_PROXY_NATIVE: '0',
  })
  t.teardown(() => void proxy.proc.kill('SIGKILL'))
  const line = await proxy.line((l) => /NOTIFY_SOCKET is set but sd_notify needs the native helper/.test(String(l.msg)))
  t.equal(line.level, 40, 'a warning')
  proxy.proc.kill('SIGTERM')
  t.equal(await proxy.exited, 0)
})

t.test('systemctl reload (ExecReload=ka-proxy upgrade, $MAINPID): RELOADING=1, then MAINPID= of the new process and READY=1, from the old main process; the command exits 0 after', { skip }, async (t) => {
  const r = await receiver(t, join(dir, 'upgrade.sock'))
  const port = await freePort()
  const proxy = spawnProxy(['--listen', `127.0.0.1:${port}`, '--target', '127.0.0.1:9'], { NOTIFY_SOCKET: r.socket })
  t.teardown(() => {
    for (const pid of new Set(proxy.logs.map((l) => l.pid))) {
      try {
        if (typeof pid === 'number') process.kill(pid, 'SIGKILL')
      } catch {
        // exited already
      }
    }
  })
  const oldPid = proxy.proc.pid!
  t.equal((await r.until('READY=1', 30_000)).pid, oldPid)
  // As systemd runs ExecReload=: $MAINPID in the environment, NOTIFY_SOCKET too (NotifyAccess=main
  // ignores what the command itself might send).
  const reload = runCliAsync(['upgrade'], { MAINPID: String(oldPid), NOTIFY_SOCKET: r.socket })
  const reloading = await r.next(20_000)
  t.equal(reloading.pid, oldPid)
  t.same(lines(reloading).filter((l) => !l.startsWith('MONOTONIC_USEC=')), ['RELOADING=1', 'STATUS=upgrading: starting a new ka-proxy'])
  const switched = await r.next(30_000)
  const done = await proxy.line((l) => l.msg.startsWith('upgrade done'), 30_000)
  const newPid = Number(done.newPid)
  t.equal(switched.pid, oldPid, 'sent by the main process systemd knows (NotifyAccess=main); nothing from the new one before')
  t.same(lines(switched), [`MAINPID=${newPid}`, 'READY=1', `STATUS=upgraded: pid ${newPid} serves`])
  const result = await reload
  t.equal(result.status, 0, 'the reload succeeds')
  t.match(result.stdout, new RegExp(`^ka-proxy: upgraded: pid ${newPid} serves \\(0 sessions moved, 0 stay in pid ${oldPid} until they end; \\d+ ms\\)\\n$`))
  t.equal(result.stderr, '')
  t.equal(await proxy.exited, 0)
  process.kill(newPid, 'SIGTERM')
  const stopping = await r.until('STOPPING=1')
  t.equal(stopping.pid, newPid, 'the new process speaks for itself from then on')
})
