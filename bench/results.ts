// Where a bench writes its results: `<name>-<start time>.<ext>` for the record, and the same
// text as `<name>-latest.<ext>`, so a person (or a README) can always point at the latest.

import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** Writes each `[extension, text]` twice, stamped and as latest; returns the paths written. */
export function writeResultFiles(outDir: string, name: string, startedAt: string, files: Array<[ext: string, text: string]>): string[] {
  mkdirSync(outDir, { recursive: true })
  const stamp = startedAt.replace(/[:.]/g, '-')
  return files.flatMap(([ext, text]) => [`${name}-${stamp}.${ext}`, `${name}-latest.${ext}`].map(file => {
    const path = join(outDir, file)
    writeFileSync(path, text)
    return path
  }))
}
