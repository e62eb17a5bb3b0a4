// Idle PostgreSQL sessions held open by an app in the client namespace, like a connection pool:
//   node --import tsx bench/lab/pg-sessions.ts HOST PORT COUNT
// It connects COUNT clients, prints {"ev":"ready","pids":[...]} (each one's pg_backend_pid()),
// then for each line "query TIMEOUT_MS" on stdin runs SELECT pg_backend_pid() on every client at
// once and prints {"ev":"answers","answers":[{"pid":n|null,"ms":n,"at":n,"error":"..."}]}, ms counted
// from the command, at the time of the answer (ms since epoch). A dead connection shows as an error or as no answer within the timeout.

import pg from 'pg'
import { createInterface } from 'node:readline'

const [host = '127.0.0.1', port = '5432', count = '1'] = process.argv.slice(2)

function emit(event: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(event) + '\n')
}

async function backendPid(client: pg.Client, timeoutMs?: number): Promise<number> {
  const { rows } = await client.query({ text: 'SELECT pg_backend_pid() AS pid', ...(timeoutMs === undefined ? {} : { query_timeout: timeoutMs }) })
  return rows[0].pid as number
}

const clients = Array.from({ length: Number(count) }, () => {
  const client = new pg.Client({ host, port: Number(port), user: 'postgres', database: 'postgres' })
  // A connection lost while idle shows as the next query failing.
  client.on('error', () => {})
  return client
})
await Promise.all(clients.map(c => c.connect()))
emit({ ev: 'ready', pids: await Promise.all(clients.map(c => backendPid(c))) })

createInterface({ input: process.stdin }).on('line', line => {
  const [op, timeout = '5000'] = line.split(' ')
  if (op !== 'query') return
  const start = Date.now()
  void Promise.all(clients.map(async c => {
    try {
      const pid = await backendPid(c, Number(timeout))
      return { pid, ms: Date.now() - start, at: Date.now() }
    } catch (err) {
      return { pid: null, ms: Date.now() - start, at: Date.now(), error: (err as Error).message }
    }
  })).then(answers => emit({ ev: 'answers', answers }))
})
