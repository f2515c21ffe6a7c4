import type { ConsistencyLevel } from '../model/types.js'

/** How many of a series' `replicationFactor` owners a level needs. */
export function requiredReplicas(level: ConsistencyLevel, replicationFactor: number): number {
  switch (level) {
    case 'one':
      return 1
    case 'quorum':
      return Math.floor(replicationFactor / 2) + 1
    case 'all':
      return replicationFactor
  }
}

/** An owner that did not take its part of a write, and why. */
export interface PartFailure {
  readonly node: string
  readonly reason: unknown
}

/** A write some series of which cannot reach its level: `series` is the first such, by index. */
export class LevelNotMet extends Error {
  constructor(
    readonly series: number,
    readonly failures: readonly PartFailure[],
  ) {
    super(`series ${series} cannot reach its consistency level`)
    this.name = 'LevelNotMet'
  }
}

/**
 * Counts, per series of one write, the owners that have their part durable, and settles once
 * every series has `need` of them (the write is acknowledged) or once some series can no longer get
 * there (it fails, naming the owners that failed it). Parts that settle afterwards change nothing.
 */
export class WriteTally {
  private readonly acks: Uint16Array
  private readonly failures: Uint16Array
  private readonly failed: PartFailure[] = []
  /** Series that have fewer than `need` acknowledgements. */
  private short: number
  private settled = false
  readonly done: Promise<void>
  private resolveDone!: () => void
  private rejectDone!: (failure: LevelNotMet) => void

  constructor(
    seriesCount: number,
    private readonly need: number,
    private readonly owners: number,
  ) {
    this.acks = new Uint16Array(seriesCount)
    this.failures = new Uint16Array(seriesCount)
    this.short = need > 0 ? seriesCount : 0
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve
      this.rejectDone = reject
    })
    if (this.short === 0) this.finish()
  }

  /** The owner's part, the series at `indexes`, is durable there. */
  ack(indexes: readonly number[]): void {
    for (const i of indexes) {
      this.acks[i] = this.acks[i]! + 1
      if (this.acks[i] === this.need) this.short--
    }
    if (this.short === 0) this.finish()
  }

  /** The owner `node` did not take its part, the series at `indexes`. */
  fail(node: string, indexes: readonly number[], reason: unknown): void {
    this.failed.push({ node, reason })
    let lost = -1
    for (const i of indexes) {
      this.failures[i] = this.failures[i]! + 1
      if (this.owners - this.failures[i]! < this.need && lost < 0) lost = i
    }
    if (lost >= 0 && !this.settled) {
      this.settled = true
      this.rejectDone(new LevelNotMet(lost, [...this.failed]))
    }
  }

  private finish(): void {
    if (this.settled) return
    this.settled = true
    this.resolveDone()
  }
}
