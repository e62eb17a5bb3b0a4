// Reading a config file: YAML (which also accepts plain JSON), checked against the schema
// before anything starts. Every problem is one ConfigError naming the file and the key.
//
// The file is read and parsed on the event loop that relays (at start and on SIGHUP), so
// its cost is bounded: a size limit far above any real config, and few YAML aliases (an
// alias expands to a copy of what it names: nested ones grow exponentially).

import { closeSync, openSync, readSync } from 'node:fs'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { parse } from 'yaml'
import { ConfigError } from '../errors.ts'
import { configSchema, type ConfigFile } from './schema.ts'
import { formatPath, parseWith } from './validate.ts'

/** Largest config file read: two thousand routes take about 220 KB. */
export const MAX_CONFIG_BYTES = 256 * 1024
/** Aliases (*name) a file may use; plenty for sharing settings between routes. */
const MAX_ALIASES = 100

function readBounded(path: string): string {
  let fd: number | undefined
  try {
    fd = openSync(path, 'r')
    // Read up to one byte past the limit rather than trusting a size (pipes, growing files).
    const buf = Buffer.alloc(MAX_CONFIG_BYTES + 1)
    let got = 0
    for (let n = -1; n !== 0 && got < buf.length; got += n) n = readSync(fd, buf, got, buf.length - got, null)
    if (got > MAX_CONFIG_BYTES) throw new ConfigError('--config', `${path} is larger than ${MAX_CONFIG_BYTES / 1024} KiB; is it the right file?`)
    return buf.toString('utf8', 0, got)
  } catch (err) {
    if (err instanceof ConfigError) throw err
    throw new ConfigError('--config', `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

const PARSE_OPTIONS = { prettyErrors: true, uniqueKeys: true, maxAliasCount: MAX_ALIASES }

/** A parse failure as one ConfigError naming the file (and the line, when YAML gives one). */
function parseError(path: string, err: { name?: string; message?: string; linePos?: Array<{ line: number }> }): ConfigError {
  const first = (err.message ?? String(err)).split('\n')[0]!
  if (err.name === 'YAMLParseError') {
    const where = err.linePos?.[0] ? `line ${err.linePos[0].line}: ` : ''
    return new ConfigError('--config', `${path}: ${where}${first.replace(/ at line \d+, column \d+:?$/, '')}`)
  }
  // The yaml library's ReferenceError for an alias count past the bound.
  if (/alias/i.test(first)) return new ConfigError('--config', `${path}: too many YAML aliases (at most ${MAX_ALIASES}); write the values out`)
  return new ConfigError('--config', `${path}: cannot parse (${first})`)
}

const check = (path: string, doc: unknown): ConfigFile => parseWith(configSchema, doc ?? {}, (p) => `${path}: ${formatPath(p)}`)

/** Reads and checks the file on this thread (at start, before anything relays). */
export function loadConfigFile(path: string): ConfigFile {
  const text = readBounded(path)
  let doc: unknown
  try {
    doc = parse(text, PARSE_OPTIONS)
  } catch (err) {
    throw parseError(path, err as Error)
  }
  return check(path, doc)
}

// The worker only parses; it is plain JavaScript loading the same yaml module, so it runs
// the same from the built files and from the sources.
const PARSE_WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const { parse } = require(workerData.yaml)
try {
  parentPort.postMessage({ doc: parse(workerData.text, workerData.options) })
} catch (err) {
  parentPort.postMessage({ error: { name: err && err.name, message: String(err && err.message), linePos: err && err.linePos } })
}`

/**
 * Reads the file, then parses it on a worker thread (on SIGHUP, while sessions relay):
 * YAML parsing takes about 10 ms per KB, which the relay must not wait for. The worker's
 * heap is bounded too; a file that exhausts it is refused like any other bad file.
 */
export async function loadConfigFileOffLoop(path: string): Promise<ConfigFile> {
  const text = readBounded(path)
  const workerData = { text, options: PARSE_OPTIONS, yaml: createRequire(import.meta.url).resolve('yaml') }
  const worker = new Worker(PARSE_WORKER, { eval: true, workerData, resourceLimits: { maxOldGenerationSizeMb: 256 }, stdout: true, stderr: true })
  try {
    const reply = await new Promise<{ doc?: unknown; error?: Error }>((resolve, reject) => {
      worker.once('message', resolve)
      worker.once('error', reject)
      worker.once('exit', (code) => reject(new Error(`parser exited with ${code}`)))
    })
    if (reply.error) throw parseError(path, reply.error)
    return check(path, reply.doc)
  } catch (err) {
    if (err instanceof ConfigError) throw err
    throw new ConfigError('--config', `${path}: cannot parse (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  } finally {
    void worker.terminate()
  }
}
