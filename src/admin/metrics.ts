// Prometheus metrics (prom-client, on a registry of our own). Nothing here runs per chunk:
// counters move when a session opens, connects or closes, and live values (active
// sessions, bytes of open sessions) are read at scrape time. The process metrics are
// prom-client's default collectors (RSS, CPU, open fds, event-loop lag, GC), as every Node
// exporter has them, plus ka_proxy_build_info. Those collectors start with the admin API, the
// only reader of /metrics: their event-loop lag monitor is a 10 ms timer, which woke an idle
// proxy without an admin API 100 times a second for figures nobody could read.

import { createRequire } from 'node:module'
import type * as PromClient from 'prom-client'
import { VERSION } from '../version.ts'
import type { SessionSummary } from '../session.ts'

// The parts of prom-client used here, each from its own file: its index also loads the
// Pushgateway (node:http, https, tls, zlib), Summary and the cluster aggregator, which cost
// every start (and so every upgrade) about 25 ms and are never used. Typed by the index.
const promFile = createRequire(import.meta.url)
const Registry = promFile('prom-client/lib/registry') as typeof PromClient.Registry
const Counter = promFile('prom-client/lib/counter') as typeof PromClient.Counter
const Gauge = promFile('prom-client/lib/gauge') as typeof PromClient.Gauge
const Histogram = promFile('prom-client/lib/histogram') as typeof PromClient.Histogram
const collectDefaultMetrics = promFile('prom-client/lib/defaultMetrics') as typeof PromClient.collectDefaultMetrics

/** What a scrape reads from the running proxy. */
export interface MetricsSource {
  /** Whether sessions relay through the native helper (the build_info label). */
  readonly native?: boolean
  routes(): Iterable<{
    name: string
    activeSessions: number
    /** Bytes moved so far by sessions still open. */
    openBytes(): { toTarget: number; toClient: number }
    targets(): Iterable<{ address: string; up: boolean }>
    /** Paired mode: links up now; undefined for a plain route. */
    pairLinksUp?: number | undefined
  }>
  /**
   * --workers: each worker thread's metrics (getMetricsAsJSON of its ProxyMetrics), summed into
   * the main thread's at scrape time.
   */
  workerMetrics?(): Promise<unknown[]>
}

export class ProxyMetrics {
  readonly registry = new Registry()
  readonly #opened: PromClient.Counter<'route'>
  readonly #closed: PromClient.Counter<'route' | 'reason' | 'leg'>
  readonly #keepaliveDeaths: PromClient.Counter<'route' | 'leg'>
  readonly #connectFailures: PromClient.Counter<'route' | 'reason'>
  readonly #refused: PromClient.Counter<'route' | 'reason'>
  readonly #connectSeconds: PromClient.Histogram<'route'>
  readonly #pairResumes: PromClient.Counter<'route'>
  /** Bytes of closed sessions; open sessions' bytes are added at scrape time. */
  readonly #closedBytes = new Map<string, { toTarget: number; toClient: number }>()

  readonly #source: MetricsSource
  /** The process collectors: not yet started, started, or never (a worker thread's metrics). */
  #processCollectors: 'idle' | 'started' | 'none'

  /**
   * `processWide`: false for a worker thread's (src/workers.ts), whose counts the main thread's
   * sums: then only what each worker counts for itself (sessions, bytes, refusals, connects), not
   * the process's figures, the build, nor the targets' health (the main thread's view).
   */
  constructor(source: MetricsSource, { processWide = true }: { processWide?: boolean } = {}) {
    this.#source = source
    const registers = [this.registry]
    this.#processCollectors = processWide ? 'idle' : 'none'
    const processRegisters = processWide ? registers : []
    new Gauge({
      name: 'ka_proxy_build_info',
      help: 'Always 1; the labels say which ka-proxy runs, on which Node, and whether the native helper is in use',
      labelNames: ['version', 'node', 'native'],
      registers: processRegisters,
      collect() {
        this.reset()
        this.set({ version: VERSION, node: process.version, native: String(source.native ?? false) }, 1)
      },
    })
    this.#opened = new Counter({ name: 'ka_proxy_sessions_total', help: 'Sessions accepted', labelNames: ['route'], registers })
    this.#closed = new Counter({
      name: 'ka_proxy_sessions_closed_total',
      help: 'Sessions ended, by reason and by the leg that caused it (none for normal ends of both)',
      labelNames: ['route', 'reason', 'leg'],
      registers,
    })
    this.#keepaliveDeaths = new Counter({
      name: 'ka_proxy_keepalive_deaths_total',
      help: 'Dead peers found by keepalive probes or TCP_USER_TIMEOUT, by leg',
      labelNames: ['route', 'leg'],
      registers,
    })
    this.#connectFailures = new Counter({
      name: 'ka_proxy_connect_failures_total',
      help: 'Failed connects to a target (connect_failed, connect_timeout)',
      labelNames: ['route', 'reason'],
      registers,
    })
    this.#refused = new Counter({
      name: 'ka_proxy_connections_refused_total',
      help: 'Clients refused before a session started (max_connections, no_healthy_target, descriptor_limit, cannot_start), and pair links refused (pair_bad_secret, pair_not_pair)',
      labelNames: ['route', 'reason'],
      registers,
    })
    this.#pairResumes = new Counter({ name: 'ka_proxy_pair_resumes_total', help: 'Paired mode: sessions resumed on a new link after theirs was lost', labelNames: ['route'], registers })
    new Gauge({
      name: 'ka_proxy_pair_links_up',
      help: 'Paired mode: links up now (the near end has at most one per route)',
      labelNames: ['route'],
      registers: processRegisters,
      collect() {
        this.reset()
        for (const r of source.routes()) if (r.pairLinksUp !== undefined) this.set({ route: r.name }, r.pairLinksUp)
      },
    })
    this.#connectSeconds = new Histogram({
      name: 'ka_proxy_connect_seconds',
      help: 'Time from accepting a client to the target leg being connected',
      labelNames: ['route'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    })
    const closedBytes = this.#closedBytes
    new Gauge({
      name: 'ka_proxy_sessions_active',
      help: 'Sessions open now',
      labelNames: ['route'],
      registers,
      collect() {
        this.reset()
        for (const r of source.routes()) this.set({ route: r.name }, r.activeSessions)
      },
    })
    new Counter({
      name: 'ka_proxy_bytes_total',
      help: 'Bytes relayed, by direction (to_target: client -> target)',
      labelNames: ['route', 'direction'],
      registers,
      collect() {
        this.reset()
        for (const r of source.routes()) {
          const open = r.openBytes()
          const closed = closedBytes.get(r.name) ?? { toTarget: 0, toClient: 0 }
          this.inc({ route: r.name, direction: 'to_target' }, closed.toTarget + open.toTarget)
          this.inc({ route: r.name, direction: 'to_client' }, closed.toClient + open.toClient)
        }
      },
    })
    new Gauge({
      name: 'ka_proxy_target_up',
      help: 'Whether a target is considered up (1) or down (0) by its health checks',
      labelNames: ['route', 'target'],
      registers: processRegisters,
      collect() {
        this.reset()
        for (const r of source.routes()) {
          for (const t of r.targets()) this.set({ route: r.name, target: t.address }, t.up ? 1 : 0)
        }
      },
    })
  }

  /**
   * Starts prom-client's process collectors (process_resident_memory_bytes, process_open_fds,
   * nodejs_eventloop_lag_seconds, ...) once, where these metrics are the process's: called when
   * an admin API, which serves /metrics, is made.
   */
  collectProcessMetrics(): void {
    if (this.#processCollectors !== 'idle') return
    this.#processCollectors = 'started'
    collectDefaultMetrics({ register: this.registry })
  }

  sessionOpened(route: string): void {
    this.#opened.inc({ route })
  }

  targetConnected(route: string, seconds: number): void {
    this.#connectSeconds.observe({ route }, seconds)
  }

  pairResumed(route: string): void {
    this.#pairResumes.inc({ route })
  }

  refused(route: string, reason: string): void {
    this.#refused.inc({ route, reason })
  }

  sessionClosed(route: string, s: SessionSummary): void {
    this.#closed.inc({ route, reason: s.reason, leg: s.leg ?? 'none' })
    if (s.reason === 'keepalive_timeout') this.#keepaliveDeaths.inc({ route, leg: s.leg ?? 'none' })
    if (s.reason === 'connect_failed' || s.reason === 'connect_timeout') this.#connectFailures.inc({ route, reason: s.reason })
    const bytes = this.#closedBytes.get(route) ?? { toTarget: 0, toClient: 0 }
    bytes.toTarget += s.bytesToTarget
    bytes.toClient += s.bytesToClient
    this.#closedBytes.set(route, bytes)
  }

  /** The Prometheus text: this registry's, with --workers every worker's summed in. */
  async text(): Promise<string> {
    const workers = (await this.#source.workerMetrics?.()) ?? []
    if (workers.length === 0) return this.registry.metrics()
    type Metrics = PromClient.MetricObjectWithValues<PromClient.MetricValue<string>>[]
    const theirs = workers as Metrics[]
    const mine = await this.registry.getMetricsAsJSON()
    // Summed: what the workers count too. The rest is this thread's alone (the process's figures,
    // the targets' health), as it is: the aggregator would drop some (process_start_time_seconds).
    const summed = new Set(theirs.flat().map((m) => m.name))
    // Loaded at the first scrape with workers: it also loads node:cluster, for nothing else.
    const AggregatorRegistry = promFile('prom-client/lib/cluster') as typeof PromClient.AggregatorRegistry
    const parts = [(await AggregatorRegistry.aggregate([mine.filter((m) => summed.has(m.name)), ...theirs]).metrics()).trimEnd()]
    for (const m of mine) if (!summed.has(m.name)) parts.push((await this.registry.getSingleMetricAsString(m.name)).trimEnd())
    return `${parts.join('\n')}\n`
  }

  get contentType(): string {
    return this.registry.contentType
  }
}
