// Shared by the lab tests: when to skip, a lab per test that is always removed, and the small
// timings that keep the lab part of the suite short. Not a test file itself.

import type { Test } from 'tap'
import { missingPrerequisite } from './helpers/prerequisite.ts'
import { createLab, kaProxy, keepaliveBound, labUnsupported, type Lab, type RelayOptions } from '../bench/lab/index.ts'

/** The NAT forgets idle flows after this many seconds in the tests. */
export const NAT_TIMEOUT = 3

/** Keepalive well inside NAT_TIMEOUT: probes every second once idle for a second. */
export const KEEPALIVE = { idle: 1, interval: 1, count: 2 }

export const OPTIONS: RelayOptions = { target: KEEPALIVE, client: KEEPALIVE }

/** What the proxy promises: a dead peer noticed within idle + interval × count. */
export const BOUND = keepaliveBound(KEEPALIVE)

/** The slack the issue allows on top of the bound. */
export const SLACK = 1.5

/**
 * The reason to skip lab tests here, or false to run them (under CI=true a reason is also a
 * failure). With `needsProxy`, also skips when ka-proxy's sources are not there yet.
 */
export async function labSkip(needsProxy = true): Promise<string | false> {
  return missingPrerequisite(await labUnsupported() ?? (needsProxy ? await kaProxy().unavailable() : null))
}

/** A fresh lab for one test, removed when the test ends whatever happened in it. */
export async function labFor(t: Test, natTimeout = NAT_TIMEOUT): Promise<Lab> {
  const lab = await createLab({ natTimeout })
  t.teardown(() => lab.destroy())
  return lab
}
