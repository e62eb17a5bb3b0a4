export { createWorkbench, Workbench, type Entrant, type Outcome } from './workbench.ts'
export { survival, type IdleCheck, type SurvivalOutcome } from './survival.ts'
export { blackholeTarget, type BlackholeOptions } from './blackhole.ts'
export { clientVanishes } from './client-vanish.ts'
