// Starting the lab's own TypeScript helpers (echo server, client driver) inside a namespace.

import { fileURLToPath } from 'node:url'
import type { Lab, Role } from './lab.ts'
import type { LabProcess } from './process.ts'

/** The repository root: `--import tsx` is resolved from the working directory. */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url))

export function spawnScript(lab: Lab, role: Role, script: string, args: readonly string[]): LabProcess {
  const path = fileURLToPath(new URL(script, import.meta.url))
  return lab.spawn(role, script, process.execPath, ['--import', 'tsx', path, ...args], { cwd: REPO_ROOT })
}
