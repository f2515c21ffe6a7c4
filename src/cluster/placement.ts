import type { Ring, TokenRange } from './ring.js'

/**
 * Which node reads which ranges for one query: a map from node id to its ranges, in token order,
 * unmerged (adjacent ranges stay apart, so a caller can compare a node's count with the ranges it
 * holds). Together the lists hold every range that has a healthy owner exactly once, so each series
 * is read from exactly one replica and counted once. `unavailable` lists the ranges none of whose
 * owners is healthy, in token order, with their owners for an UNAVAILABLE error that names them.
 */
export type ReadAssignment = ReadonlyMap<string, readonly TokenRange[]> & {
  readonly unavailable: readonly TokenRange[]
}

/** Passes of the rebalancing step; each moves ranges only when that lowers the larger of two loads. */
const REBALANCE_PASSES = 4

/**
 * Chooses one replica for every range of the ring, for a query. A range goes to `prefer` (the
 * coordinating node, which then reads locally instead of over the network) when it is a healthy
 * owner. Otherwise it goes to its healthy owner with the fewest tokens assigned so far, ties to the
 * owner first in ring order; a few passes then hand single ranges from a busier owner to a less busy
 * one, since a greedy pass in token order alone leaves about 10 % between the busiest reader and the
 * mean. Pure: the same ring, factor, healthy set and preference give the same plan.
 */
export function assignReadReplicas(
  ring: Ring,
  replicationFactor: number,
  healthy: ReadonlySet<string>,
  prefer?: string,
): ReadAssignment {
  const ranges = ring.ranges(replicationFactor)
  const load = new Map<string, number>()
  const reader: (string | undefined)[] = new Array(ranges.length)
  const preferred = prefer !== undefined && healthy.has(prefer) ? prefer : undefined
  const unavailable: TokenRange[] = []
  ranges.forEach((range, i) => {
    let chosen: string | undefined
    if (preferred !== undefined && range.owners.includes(preferred)) chosen = preferred
    else {
      for (const owner of range.owners) {
        if (!healthy.has(owner)) continue
        if (chosen === undefined || (load.get(owner) ?? 0) < (load.get(chosen) ?? 0)) chosen = owner
      }
    }
    reader[i] = chosen
    if (chosen === undefined) unavailable.push(range)
    else load.set(chosen, (load.get(chosen) ?? 0) + (range.end - range.start))
  })
  for (let pass = 0; pass < REBALANCE_PASSES; pass++) {
    let moved = false
    ranges.forEach((range, i) => {
      const from = reader[i]
      if (from === undefined || from === preferred) return
      const size = range.end - range.start
      for (const to of range.owners) {
        if (to === from || !healthy.has(to)) continue
        // Strictly lowers the larger of the two loads, so the passes cannot cycle.
        if ((load.get(to) ?? 0) + size < load.get(from)!) {
          load.set(from, load.get(from)! - size)
          load.set(to, (load.get(to) ?? 0) + size)
          reader[i] = to
          moved = true
          return
        }
      }
    })
    if (!moved) break
  }
  const byNode = new Map<string, TokenRange[]>()
  ranges.forEach((range, i) => {
    const id = reader[i]
    if (id === undefined) return
    const list = byNode.get(id)
    if (list) list.push(range)
    else byNode.set(id, [range])
  })
  return Object.assign(byNode, { unavailable })
}
