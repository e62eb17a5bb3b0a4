// package.json's engines agree with the dependencies, and doctor's advice with a checkout.
// The deployment files agree with the program: the systemd unit passes systemd-analyze and
// asks for what ka-proxy does (Type=notify, reload = the upgrade, waited for); the Kubernetes example's config
// passes `ka-proxy check`, and its probes, scrape annotations and token match that config; the
// Dockerfile runs the build script that CI runs (config/docker/build.sh) and drops root.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseAllDocuments } from 'yaml'
import semver from 'semver'
import { buildAdvice } from '../src/native.ts'
import { SUPPORTED_NODE_LINES } from '../src/version.ts'
import { runCli } from './helpers/cli.ts'
import { missingPrerequisite } from './helpers/prerequisite.ts'

const root = new URL('..', import.meta.url).pathname
const read = (p: string): string => readFileSync(join(root, p), 'utf8')

t.test("engines: every supported line's oldest release satisfies every dependency's engines", async (t) => {
  const pkg = JSON.parse(read('package.json')) as { engines: { node: string }; dependencies: Record<string, string> }
  t.same(SUPPORTED_NODE_LINES, [22, 24, 26], 'the lines the README names')
  const oldest = SUPPORTED_NODE_LINES.map((major) => semver.minVersion(pkg.engines.node.split('||').find((r) => semver.major(semver.minVersion(r)!) === major)!)!.version)
  for (const dep of Object.keys(pkg.dependencies)) {
    const range = (JSON.parse(read(`node_modules/${dep}/package.json`)) as { engines?: { node?: string } }).engines?.node
    if (range === undefined) continue
    for (const v of oldest) t.ok(semver.satisfies(v, range), `${dep} (engines ${range}) runs on Node ${v}`)
  }
})

t.test('doctor advises the checkout build script in a git checkout', async (t) => {
  t.equal(buildAdvice(), 'npm run build:native')
})

const analyze = spawnSync('systemd-analyze', ['--version'])
const noAnalyze = missingPrerequisite(analyze.status !== 0 && 'systemd-analyze (package systemd) is needed to verify the unit')

t.test('config/systemd/ka-proxy.service passes systemd-analyze verify', { skip: noAnalyze }, async (t) => {
  const r = spawnSync('systemd-analyze', ['verify', join(root, 'config/systemd/ka-proxy.service')], { encoding: 'utf8' })
  t.equal(r.status, 0, 'exit 0')
  t.equal(r.stderr.trim(), '', 'no unknown keys, no bad values')
})

t.test('the unit asks for what ka-proxy does', async (t) => {
  const unit = read('config/systemd/ka-proxy.service')
  const has = (line: string): void => void t.match(unit, new RegExp(`^${line.replace(/[$]/g, '\\$')}$`, 'm'), line)
  has('Type=notify')
  has('NotifyAccess=main')
  has('ExecReload=/usr/bin/env ka-proxy upgrade --pid $MAINPID')
  has('DynamicUser=yes')
  has('NoNewPrivileges=yes')
  has('ProtectSystem=strict')
  has('LimitNOFILE=1048576')
  t.match(unit, /^RestrictAddressFamilies=.*\bAF_UNIX\b/m, 'AF_UNIX allowed: sd_notify needs it')
  t.match(unit, /^ExecStart=.* --config \/etc\/ka-proxy\/ka-proxy\.yaml\b/m, 'reads the file ConfigurationDirectory= makes readable')
  has('ConfigurationDirectory=ka-proxy')
})

t.test('the Kubernetes sidecar example: config valid, probes and scraping match it', async (t) => {
  const docs = parseAllDocuments(read('config/kubernetes/ka-proxy-sidecar.yaml')).map((d) => d.toJS() as Record<string, any>)
  const secret = docs.find((d) => d.kind === 'Secret')
  const deployment = docs.find((d) => d.kind === 'Deployment')
  const configText: string = secret?.stringData?.['ka-proxy.yaml']
  t.type(configText, 'string', 'the config is in the Secret')
  const dir = mkdtempSync(join(tmpdir(), 'ka-proxy-k8s-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'ka-proxy.yaml'), configText)
  const check = runCli(['check', '--config', join(dir, 'ka-proxy.yaml')])
  t.equal(check.status, 0, `ka-proxy check passes: ${check.stderr}`)
  const config = parseAllDocuments(configText)[0]!.toJS() as { admin: { listen: string; token: string }; shutdownGrace: number }
  const adminPort = Number(config.admin.listen.split(':').pop())
  const spec = deployment?.spec?.template?.spec
  const proxy = spec.containers.find((c: { name: string }) => c.name === 'ka-proxy')
  const port = proxy.ports.find((p: { name: string }) => p.name === 'admin').containerPort
  t.equal(port, adminPort, 'the admin port is the one the config listens on')
  for (const probe of [proxy.readinessProbe, proxy.livenessProbe]) {
    t.equal(probe.httpGet.path, '/healthz')
    t.equal(probe.httpGet.port, 'admin')
    t.same(probe.httpGet.httpHeaders, [{ name: 'Authorization', value: `Bearer ${config.admin.token}` }], 'sends the config token')
  }
  const annotations = deployment?.spec?.template?.metadata?.annotations
  t.equal(annotations['prometheus.io/path'], '/metrics')
  t.equal(Number(annotations['prometheus.io/port']), adminPort)
  t.ok(spec.terminationGracePeriodSeconds > config.shutdownGrace, 'the kubelet waits longer than the drain')
  t.same(proxy.args, ['--config', '/etc/ka-proxy/ka-proxy.yaml'])
  t.equal(proxy.volumeMounts[0].mountPath, '/etc/ka-proxy')
})

t.test('the Dockerfile builds with config/docker/build.sh and runs as a non-root user', async (t) => {
  const dockerfile = read('Dockerfile')
  t.match(dockerfile, /^RUN config\/docker\/build\.sh \/app\b/m, 'the build stage runs the script CI runs')
  t.doesNotThrow(() => accessSync(join(root, 'config/docker/build.sh'), constants.X_OK), 'the script is executable')
  t.match(dockerfile, /^FROM node:\$\{NODE_VERSION\}-bookworm-slim$/m, 'slim runtime image')
  t.match(dockerfile, /^RUN \["node", "\/app\/dist\/main\.js", "doctor"\]$/m, 'doctor checks the runtime image')
  t.match(dockerfile, /^USER node$/m, 'not root')
  t.match(dockerfile, /^ENTRYPOINT \["node", "\/app\/dist\/main\.js"\]$/m, 'node is PID 1 and gets SIGTERM itself')
  t.match(dockerfile, new RegExp(`^ARG NODE_VERSION=${24}$`, 'm'), 'the recommended LTS line')
})
