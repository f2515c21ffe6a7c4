/** A clock the test moves by hand, for the engine's `{ clock }` option and anything that calls `now`. */
export class ManualClock {
  constructor(public t: number) {}
  readonly now = (): number => this.t
}
