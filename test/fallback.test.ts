// The native helper really missing, not switched off: a copy of the sources whose native/
// directory holds no build and no prebuilt binary, so the loader finds nothing. ka-proxy still
// runs, says once why and how to build it, moves bytes with Node streams, and says so: in
// --version, in the one warning, in the `listening` line ("relay":"stream"), and in doctor's
// exit code. A pair link with such an end keeps its frames in TLS.

import t from 'tap'
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createHash } from 'node:crypto'
import { runCli, spawnProxy, startCliProxy, type Entry } from './helpers/cli.ts'
import { pairSecretFile } from './helpers/pair.ts'
import { connect, listen, readAll } from './helpers/net.ts'
import { payload, writeChunked } from './helpers/payload.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** The sources, package.json and dependencies, but a native/ directory with nothing built. */
function unbuiltCopy(): Entry {
  const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-unbuilt-'))
  cpSync(join(ROOT, 'src'), join(dir, 'src'), { recursive: true })
  cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'))
  mkdirSync(join(dir, 'native'))
  cpSync(join(ROOT, 'native', 'binding.gyp'), join(dir, 'native', 'binding.gyp'))
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return { main: join(dir, 'src', 'main.ts'), cwd: dir }
}

const entry = unbuiltCopy()
const NOT_BUILT = /native socket helper: NOT in use \(no binary for linux-\w+: build it with npm rebuild ka-proxy[^)]*\); falling back to setKeepAlive: interval 1 s, count 10, no TCP_USER_TIMEOUT/

t.test('--version and doctor say the helper is not built, and how to build it', async (t) => {
  const version = runCli(['--version'], {}, entry)
  t.equal(version.status, 0)
  t.match(version.stdout, NOT_BUILT)
  const doctor = runCli(['doctor'], {}, entry)
  t.equal(doctor.status, 1, 'doctor: exit 1 without the helper')
  t.match(doctor.stdout, NOT_BUILT)
})

t.test('the proxy runs on the fallback: one warning, "relay":"stream" in the listening line, bytes exact', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const proxy = await startCliProxy(['--target', `127.0.0.1:${port}`, '--idle', '7'], {}, entry)
  t.teardown(() => proxy.stop('SIGKILL'))
  const warnings = proxy.logs.filter((l) => l.level === 40)
  t.equal(warnings.length, 1, 'said once')
  t.match(warnings[0]!.msg, NOT_BUILT)
  t.match(proxy.logs.find((l) => l.msg === 'listening'), {
    native: false,
    relay: 'stream',
    clientKeepalive: { idle: 7, interval: 1, count: 10, userTimeout: 0, native: false },
    targetKeepalive: { idle: 7, interval: 1, count: 10, userTimeout: 0, native: false },
  })
  const data = payload(1 << 20)
  const client = await connect(proxy.port)
  const echoed = readAll(client)
  await writeChunked(client, data, { end: true })
  const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
  t.equal(digest(await echoed), digest(data), '1 MiB relayed both ways, exact')
  t.match(await proxy.line((l) => l.msg === 'session closed'), { reason: 'client_end', bytesToTarget: 1 << 20, bytesToClient: 1 << 20 })
  t.equal(await proxy.stop('SIGTERM'), 0)
})

t.test('a pair whose far end has no helper keeps its link in TLS, and sessions cross it byte-exact', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s))
  t.teardown(() => server.close())
  const secret = pairSecretFile()
  const far = spawnProxy(['--pair-listen', '127.0.0.1:0', '--target', `127.0.0.1:${port}`, '--pair-secret-file', secret], {}, entry)
  t.teardown(() => far.stop('SIGKILL'))
  const listening = await far.line((l) => l.msg === 'listening', 30_000)
  const near = await startCliProxy(['--pair-connect', `127.0.0.1:${String(listening.address).split(':').pop()}`, '--pair-secret-file', secret])
  t.teardown(() => near.stop('SIGKILL'))
  t.match(await near.line((l) => l.msg === 'pair link up'), { records: false }, 'the near end (with the helper): frames in TLS')
  t.match(await far.line((l) => l.msg === 'pair link up'), { records: false }, 'the far end (without): frames in TLS')
  const data = payload(1 << 20)
  const client = await connect(near.port)
  const echoed = readAll(client)
  await writeChunked(client, data, { end: true })
  t.ok((await echoed).equals(data), '1 MiB through the pair both ways, exact')
})
