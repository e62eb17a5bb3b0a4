// A PostgreSQL client app for the lab, run inside the client namespace:
//   node --import tsx bench/lab/pg-client.ts HOST PORT IDLE_SECONDS QUERY_TIMEOUT_MS
// It connects, runs SELECT 1, stays idle, runs SELECT 1 again, and prints one JSON line each:
//   {"step":"first","ok":true}  {"step":"after-idle","ok":false,"error":"Query read timeout"}
// Like a connection pool that keeps a connection open between requests.

import pg from 'pg'

const [host = '127.0.0.1', port = '5432', idle = '1', timeout = '3000'] = process.argv.slice(2)

function report(step: string, ok: boolean, error?: unknown): void {
  const message = error instanceof Error ? error.message : error === undefined ? undefined : String(error)
  process.stdout.write(JSON.stringify({ step, ok, ...(message === undefined ? {} : { error: message }), t: Date.now() }) + '\n')
}

async function selectOne(client: pg.Client, step: string): Promise<void> {
  try {
    const { rows } = await client.query('SELECT 1 AS one')
    report(step, rows[0]?.one === 1)
  } catch (err) {
    report(step, false, err)
  }
}

const client = new pg.Client({ host, port: Number(port), user: 'postgres', database: 'postgres', query_timeout: Number(timeout) })
// A dead connection surfaces here as well as on the query; the query's report is the one that counts.
client.on('error', () => {})
await client.connect()
await selectOne(client, 'first')
await new Promise(resolve => setTimeout(resolve, Number(idle) * 1000))
await selectOne(client, 'after-idle')
// The connection may be dead: do not wait for a goodbye that cannot arrive.
process.exit(0)
