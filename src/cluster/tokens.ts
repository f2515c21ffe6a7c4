import { createHash } from 'node:crypto'
import { bug } from '../model/errors.js'
import { Ring, type RingMember, TOKEN_SPACE } from './ring.js'

/**
 * Tokens per node unless configured. Each join takes its share in steps of 1/vnodes of a node's
 * share, so 64 already keeps primary ownership within about 2 % of the mean; 128 halves that
 * granularity. It does not make the spread after a removal lower (the ring bench shows 1.09 and
 * 1.19 at 10 and 100 nodes with 64 tokens, 1.13 and 1.20 with 128, for R = 1); rebalancing after
 * a removal is the leader's job. The costs grow with the count but stay small at 128: 128 ranges
 * per node for queries, repair digests and range moves, and about 1.5 KB of tokens per node in
 * Consul.
 */
export const DEFAULT_VNODES = 128

function hash32(text: string): number {
  return createHash('sha256').update(text, 'utf8').digest().readUInt32BE(0)
}

function checkCount(count: number): void {
  if (!Number.isInteger(count) || count < 1 || count > 65_536) {
    throw bug(`token count ${count} is not an integer between 1 and 65536`)
  }
}

/**
 * Evenly spaced tokens for the first node of a ring, offset by a hash of its id so that two rings
 * started from different first nodes do not share token positions. Ascending.
 */
export function evenTokens(nodeId: string, count: number): number[] {
  checkCount(count)
  const step = TOKEN_SPACE / count
  const offset = hash32(nodeId) % Math.floor(step)
  return Array.from({ length: count }, (_, i) => Math.floor(offset + i * step))
}

/** One existing token with the part of its range the joining node has not taken yet. */
interface Vnode {
  readonly node: number
  /** The exclusive lower end of what is left of its range: its previous ring token, then moved up by each take. */
  lower: number
  /** The size of what is left of the range. */
  length: number
  /**
   * The node that stops being a replica of the range's tokens when the joiner's token lands in
   * it: its REPLICA_BALANCE-th owner, or -1 while the ring has fewer nodes than that.
   */
  readonly loser: number
}

/** The replication factor whose replica shares token choice also evens out, among equal choices. */
const REPLICA_BALANCE = 3

/**
 * Tokens for a node joining a ring, chosen so that ownership stays even from the start. The node
 * gets a share of the token space in proportion to its token count (1/(N+1) when every node has the
 * same count), and takes it from the existing nodes that own the most above their own proportional
 * share, in `count` equal steps: each step gives one new token, placed inside the largest remaining
 * range of the node that is furthest above its share, so that the new token takes exactly one step's
 * worth of that range's lower end. That fills the ring like water from the top: after the join every
 * node is within about one step (1/count of a share) of its target, the joining node owns its share
 * exactly, and only the series it now owns move. Existing tokens never change. Among the giver's
 * ranges, the step goes to the one whose third replica (the node that stops holding a copy of those
 * series) is furthest above its replica share, which keeps shares with R = 3 at about 1.10 max/mean
 * rather than 1.13 to 1.19 when taking from the largest range.
 *
 * Deterministic: the same ring, id and count always give the same tokens. A node id already in the
 * ring with tokens gets its own tokens back. Joins must be serialised (each chosen against the ring
 * that includes every earlier joiner, as the leader does), or two joiners may pick the same tokens.
 *
 * @returns The new tokens, ascending.
 */
export function chooseTokens(existing: readonly RingMember[], nodeId: string, count: number): number[] {
  checkCount(count)
  const self = existing.find((m) => m.id === nodeId)
  if (self && self.tokens.length > 0) return self.tokens.slice().sort((a, b) => a - b)

  const members = existing.filter((m) => m.id !== nodeId && m.tokens.length > 0)
  members.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  if (members.length === 0) return evenTokens(nodeId, count)

  // Sorted (token, node) pairs; a token held twice belongs to the smaller id, as in Ring.
  const pairs: [number, number][] = []
  members.forEach((m, n) => {
    for (const t of m.tokens) pairs.push([t, n])
  })
  pairs.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  const tokens: number[] = []
  const owner: number[] = []
  for (const [t, n] of pairs) {
    if (tokens.length > 0 && tokens[tokens.length - 1] === t) continue
    tokens.push(t)
    owner.push(n)
  }

  const ring = new Ring(members, 0)
  const ranges = ring.ranges(REPLICA_BALANCE)
  const indexOf = new Map(members.map((m, n) => [m.id, n]))
  const vnodesOf: Vnode[][] = members.map(() => [])
  const owned = new Float64Array(members.length)
  for (let i = 0; i < tokens.length; i++) {
    // The range of the smallest token wraps: its lower end is the largest token, one turn back.
    const lower = i === 0 ? tokens[tokens.length - 1]! - TOKEN_SPACE : tokens[i - 1]!
    const length = tokens[i]! - lower
    const owners = ranges[i]!.owners
    const loser = owners.length === REPLICA_BALANCE ? indexOf.get(owners[REPLICA_BALANCE - 1]!)! : -1
    const vnode: Vnode = { node: owner[i]!, lower, length, loser }
    vnodesOf[vnode.node]!.push(vnode)
    owned[vnode.node]! += length
  }

  // Every node's target is a share of the space in proportion to its tokens, the joiner included.
  let weight = count
  for (const m of members) weight += m.tokens.length
  const excess = new Float64Array(members.length)
  const replicaExcess = new Float64Array(members.length)
  const replicaShares = ring.ownership(REPLICA_BALANCE)
  members.forEach((m, n) => {
    excess[n] = owned[n]! - (TOKEN_SPACE * m.tokens.length) / weight
    replicaExcess[n] =
      (replicaShares.get(m.id) ?? 0) * TOKEN_SPACE - (REPLICA_BALANCE * TOKEN_SPACE * m.tokens.length) / weight
  })

  let remaining = Math.round((TOKEN_SPACE * count) / weight)
  const chosen: number[] = []
  for (let step = 0; step < count; step++) {
    const want = Math.round(remaining / (count - step))
    // The node furthest above its target; ties go to the smaller id (members are sorted by id).
    let giver = -1
    let best: Vnode | undefined
    for (let n = 0; n < members.length; n++) {
      if (giver >= 0 && excess[n]! <= excess[giver]!) continue
      const largest = bestRange(vnodesOf[n]!, want, replicaExcess)
      if (largest === undefined) continue
      giver = n
      best = largest
    }
    if (!best) throw bug(`no range left to split for token ${step} of node ${nodeId}`)
    // A range is never taken whole: the new token must differ from the range's own token.
    const take = Math.max(1, Math.min(want, best.length - 1))
    const token = best.lower + take
    chosen.push(token < 0 ? token + TOKEN_SPACE : token)
    best.lower = token
    best.length -= take
    excess[giver]! -= take
    if (best.loser >= 0) replicaExcess[best.loser]! -= take
    remaining -= take
  }
  return chosen.sort((a, b) => a - b)
}

/**
 * The range to take a step from: among those that can give a whole step, the one whose lost replica
 * belongs to the node furthest above its replica share, so that replica shares even out too; when
 * none can give a whole step, the largest that can still be split. Ties go to the lowest token.
 */
function bestRange(vnodes: readonly Vnode[], want: number, replicaExcess: Float64Array): Vnode | undefined {
  let best: Vnode | undefined
  let bestScore = Number.NEGATIVE_INFINITY
  let largest: Vnode | undefined
  for (const v of vnodes) {
    if (v.length >= 2 && (largest === undefined || v.length > largest.length)) largest = v
    if (v.length <= want) continue
    const score = v.loser >= 0 ? replicaExcess[v.loser]! : 0
    if (score > bestScore) {
      best = v
      bestScore = score
    }
  }
  return best ?? largest
}

/**
 * The ring without a node: its tokens are dropped and each of its ranges falls to the next token
 * clockwise, so only the series it owned move. No other token changes; the next join evens out what
 * the removal left uneven, since it takes first from the nodes furthest above their share.
 */
export function withoutMember(members: readonly RingMember[], nodeId: string): RingMember[] {
  return members.filter((m) => m.id !== nodeId)
}
