// A test that cannot run here (no root, no PostgreSQL, no redis-server, no namespaces) skips
// with the reason; in CI (CI=true) a missing prerequisite is a failure instead, so a green
// run there means every test ran.

import t from 'tap'

export const inCi = process.env.CI === 'true'

/**
 * `reason` is why the tests that follow cannot run here (null or false: they can). Returns
 * it as tap's skip value; under CI=true it also fails the file, naming the reason.
 */
export function missingPrerequisite(reason: string | null | false | undefined): string | false {
  if (!reason) return false
  if (inCi) t.fail(`CI=true: a missing prerequisite is a failure, not a skip: ${reason}`)
  return reason
}
