// The cases of the performance bench, by name, in the order the table lists them.

import type { CaseName } from '../options.ts'
import type { PerfCase } from './case.ts'
import { bulkCase } from './bulk.ts'
import { rrCase } from './rr.ts'
import { pgbenchCase } from './pgbench.ts'
import { idleCase } from './idle.ts'
import { upgradeCase } from './upgrade.ts'

export type { CaseEnv, Metrics, PerfCase } from './case.ts'
export { idleSessionLimit } from './idle.ts'

export const PERF_CASES: Record<CaseName, PerfCase> = {
  bulk1: bulkCase('bulk1', false, 'up'),
  bulk8: bulkCase('bulk8', true, 'up'),
  down1: bulkCase('down1', false, 'down'),
  down8: bulkCase('down8', true, 'down'),
  rr1: rrCase('rr1', false),
  rr32: rrCase('rr32', true),
  pgbench: pgbenchCase,
  idle: idleCase,
  'upgrade-idle': upgradeCase('upgrade-idle', false),
  'upgrade-busy': upgradeCase('upgrade-busy', true)
}
