// Reading a config file: YAML (which also accepts plain JSON), checked against the schema
// before anything starts. Every problem is one ConfigError naming the file and the key.

import { readFileSync } from 'node:fs'
import { parse, YAMLParseError } from 'yaml'
import { ConfigError } from '../errors.ts'
import { configSchema, formatPath, parseWith, type ConfigFile } from './schema.ts'

export function loadConfigFile(path: string): ConfigFile {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError('--config', `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
  let doc: unknown
  try {
    doc = parse(text, { prettyErrors: true, uniqueKeys: true })
  } catch (err) {
    if (err instanceof YAMLParseError) {
      const where = err.linePos?.[0] ? `line ${err.linePos[0].line}: ` : ''
      throw new ConfigError('--config', `${path}: ${where}${err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`)
    }
    throw err
  }
  return parseWith(configSchema, doc ?? {}, (p) => `${path}: ${formatPath(p)}`)
}
