// Leaving nothing behind: every lab registers a synchronous teardown here, and the teardowns
// run on normal exit, on an uncaught error, and on SIGINT/SIGTERM/SIGHUP. They are
// synchronous because in those moments the event loop will not run again.

import { constants } from 'node:os'

type Teardown = () => void

const teardowns = new Set<Teardown>()
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']
let installed = false

function runAll(): void {
  for (const teardown of [...teardowns]) {
    teardowns.delete(teardown)
    try { teardown() } catch { /* the next teardown must still run */ }
  }
}

/** Named so that a stack trace in a signal storm says what it is. */
function onSignal(sig: NodeJS.Signals): void {
  runAll()
  process.off(sig, onSignal)
  // Keep the usual meaning of the signal: die by it, as if we had never handled it.
  if (process.listenerCount(sig) === 0) {
    process.kill(process.pid, sig)
    return
  }
  // Others listen too. They may end the process; but some (signal-exit, used by test runners)
  // only act when they are the sole listener and saw us: so exit anyway if nobody has soon.
  setTimeout(() => process.exit(128 + (constants.signals[sig] ?? 0)), 500).unref()
}

function install(): void {
  if (installed) return
  installed = true
  process.on('exit', runAll)
  for (const sig of SIGNALS) process.on(sig, onSignal)
}

/** Registers a teardown; returns the function that unregisters it once the async path ran. */
export function onTeardown(teardown: Teardown): () => void {
  install()
  teardowns.add(teardown)
  return () => { teardowns.delete(teardown) }
}
