// A target's health with hysteresis, as HAProxy does it: `fall` failed checks in a row
// mark an up target down, `rise` good checks in a row mark a down target up; a result
// that agrees with the current state resets the count. Before its first check a target is
// 'unknown' and used like an up one; the first result decides (HAProxy's default
// init-state "up": one failed check marks it down).

export type HealthState = 'unknown' | 'up' | 'down'

export interface HealthChange {
  from: HealthState
  to: HealthState
}

export class TargetHealth {
  state: HealthState = 'unknown'
  /** Results in a row that disagree with `state`. */
  streak = 0
  readonly fall: number
  readonly rise: number

  constructor(fall: number, rise: number) {
    this.fall = fall
    this.rise = rise
  }

  /** Records one check result; returns the change it causes, if any. */
  record(ok: boolean): HealthChange | undefined {
    const from = this.state
    if (from === 'unknown') return this.#become(ok ? 'up' : 'down')
    if (ok === (from === 'up')) {
      this.streak = 0
      return undefined
    }
    this.streak++
    if (this.streak < (from === 'up' ? this.fall : this.rise)) return undefined
    return this.#become(from === 'up' ? 'down' : 'up')
  }

  #become(to: HealthState): HealthChange {
    const change = { from: this.state, to }
    this.state = to
    this.streak = 0
    return change
  }
}
