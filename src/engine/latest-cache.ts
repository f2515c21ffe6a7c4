/** A point: timestamp in milliseconds and value. */
export interface Point {
  readonly ts: number
  readonly val: number
}

/**
 * The latest stored point of each series (hot and cold families; the write buffer is asked
 * directly), so that Latest over many series reads memory instead of two reverse scans per series.
 * An entry is filled by the first Latest that reads a series, raised by every seal, and dropped by
 * deletes and retention. A generation per series keeps a read that raced with a seal or a delete
 * from storing what it saw before them.
 */
export class LatestCache {
  private readonly entries = new Map<number, Point | null>()
  private readonly generations = new Map<number, number>()

  generation(handle: number): number {
    return this.generations.get(handle) ?? 0
  }

  /** The cached latest stored point: a point, null when nothing is stored, undefined when unknown. */
  get(handle: number): Point | null | undefined {
    return this.entries.get(handle)
  }

  /** Stores what a read found, unless a seal or delete touched the series since `generation`. */
  store(handle: number, generation: number, point: Point | null): void {
    if (this.generation(handle) === generation) this.entries.set(handle, point)
  }

  /** A seal stored points of the series up to `point` (its latest, which wins ties). */
  sealed(handle: number, point: Point): void {
    this.bump(handle)
    const known = this.entries.get(handle)
    if (known === undefined) return
    if (known === null || point.ts >= known.ts) this.entries.set(handle, point)
  }

  /** Stored points of the series were removed: the next read looks again. */
  invalidate(handle: number): void {
    this.bump(handle)
    this.entries.delete(handle)
  }

  /** The series was deleted and its handle is never used again: nothing is kept for it. */
  forget(handle: number): void {
    this.entries.delete(handle)
    this.generations.delete(handle)
  }

  private bump(handle: number): void {
    this.generations.set(handle, this.generation(handle) + 1)
  }
}
