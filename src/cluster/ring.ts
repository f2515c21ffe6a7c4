import { bug } from '../model/errors.js'

/**
 * The consistent-hash ring: which nodes own which part of the uint32 token space.
 *
 * Convention: a token t is owned by the first ring token >= t, wrapping around to the smallest ring
 * token when t is above the largest. A ring token T therefore owns the tokens (previous ring token,
 * T], and the owners of t with replication factor R are the first R distinct nodes met walking
 * clockwise (towards larger tokens, wrapping) from that ring token.
 */

/** The number of tokens in the ring's space, 2^32. TokenRange.end reaches it for the last range. */
export const TOKEN_SPACE = 2 ** 32

/** A member of the ring: a node id and its tokens (uint32, in any order). */
export interface RingMember {
  readonly id: string
  readonly tokens: readonly number[]
}

/** A half-open interval [start, end) of tokens; start < end <= 2^32. */
export interface TokenSpan {
  readonly start: number
  readonly end: number
}

/** A span of tokens and its owners in ring order (primary first). */
export interface TokenRange extends TokenSpan {
  readonly owners: readonly string[]
}

function isToken(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n < TOKEN_SPACE
}

/** The clockwise owner walk for one replication factor, computed once per factor and then shared. */
interface Placement {
  /** The owners of range i, for every range index; frozen so callers can hold them. */
  readonly owners: readonly (readonly string[])[]
  readonly ranges: readonly TokenRange[]
}

/**
 * An immutable ring of a given version. Lookups binary-search a sorted Uint32Array of the distinct
 * ring tokens; the owner lists are computed once per replication factor and shared, so owners() does
 * not allocate after the first call for a factor.
 *
 * Range i (i < number of distinct tokens) covers (token[i-1], token[i]], as [token[i-1] + 1,
 * token[i] + 1), with range 0 starting at 0. The wrapping range of the smallest token is split in
 * two: its part above the largest token is the last range, [largest + 1, 2^32), which exists unless
 * the largest token is 2^32 - 1, and has the same owners as range 0. So ranges() always covers
 * [0, 2^32) exactly once, contiguous and in order.
 */
export class Ring {
  readonly version: number
  readonly members: readonly RingMember[]
  /** Distinct ring tokens, ascending. */
  private readonly tokens: Uint32Array
  /** For each distinct token, the index in `nodeIds` of its node (after tie-breaking). */
  private readonly vnodeNode: Uint32Array
  /** Node ids, sorted; their index is their number in vnodeNode. */
  private readonly nodeIds: readonly string[]
  /** The number of distinct nodes that hold at least one token. */
  readonly nodeCount: number
  /** Placements by replication factor, as asked and as capped to the node count. */
  private readonly placements = new Map<number, Placement>()
  /** The last factor looked up and its placement: callers use one factor, so owners() skips the map. */
  private lastFactor = 0
  private lastPlacement: Placement | undefined

  /**
   * @param members The nodes and their tokens. Ids must be unique and tokens uint32. Tokens should
   * be unique across the ring; if two nodes ever hold the same token, the node with the smaller id
   * (in UTF-16 code-unit order) owns it and the other node's copy is ignored, so every node resolves
   * the tie the same way.
   * @param version The ring version, carried by peer messages so nodes can tell stale rings apart.
   */
  constructor(members: readonly RingMember[], version: number) {
    const ids = members.map((m) => m.id)
    if (new Set(ids).size !== ids.length) throw bug(`ring version ${version} lists a node id twice`)
    this.version = version
    this.members = members
    this.nodeIds = ids.slice().sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    const nodeIndex = new Map(this.nodeIds.map((id, i) => [id, i]))
    // Packs (token, node index) into one float so a plain numeric sort orders by token, then id.
    let count = 0
    for (const m of members) count += m.tokens.length
    const packed = new Float64Array(count)
    let k = 0
    for (const m of members) {
      const n = nodeIndex.get(m.id)!
      for (const t of m.tokens) {
        if (!isToken(t)) throw bug(`node ${m.id} has token ${t}, which is not a uint32`)
        packed[k++] = t * 65_536 + n
      }
    }
    if (this.nodeIds.length > 65_536) throw bug(`ring of ${this.nodeIds.length} nodes is too large`)
    packed.sort()
    const tokens = new Uint32Array(count)
    const vnodeNode = new Uint32Array(count)
    let distinct = 0
    for (let i = 0; i < count; i++) {
      const token = Math.floor(packed[i]! / 65_536)
      if (distinct > 0 && tokens[distinct - 1] === token) continue
      tokens[distinct] = token
      vnodeNode[distinct] = packed[i]! - token * 65_536
      distinct++
    }
    this.tokens = tokens.slice(0, distinct)
    this.vnodeNode = vnodeNode.slice(0, distinct)
    this.nodeCount = new Set(this.vnodeNode).size
  }

  /**
   * The index in ranges() of the range holding a token: the first ring token >= t, or the last
   * range (the upper part of the wrapping range) when t is above every ring token.
   */
  rangeIndexOf(token: number): number {
    const tokens = this.tokens
    let lo = 0
    let hi = tokens.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (tokens[mid]! < token) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  /**
   * The owners of a token, primary first: the first min(replicationFactor, nodes) distinct nodes
   * clockwise from it. The array is shared and frozen; it is empty on a ring without tokens.
   */
  owners(token: number, replicationFactor: number): readonly string[] {
    let placement = this.lastPlacement
    if (placement === undefined || this.lastFactor !== replicationFactor) {
      placement = this.placement(replicationFactor)
      this.lastPlacement = placement
      this.lastFactor = replicationFactor
    }
    return placement.owners[this.rangeIndexOf(token)] ?? []
  }

  /** Every range of the token space with its owners, in token order, covering [0, 2^32) exactly once. */
  ranges(replicationFactor: number): readonly TokenRange[] {
    return this.placement(replicationFactor).ranges
  }

  /**
   * The share of the token space each node owns, between 0 and 1: as primary with the default
   * replicationFactor 1, else as any of the owners, so the shares add up to min(R, nodes). Every
   * member is listed, with 0 when it owns nothing.
   */
  ownership(replicationFactor = 1): ReadonlyMap<string, number> {
    const share = new Map<string, number>(this.members.map((m) => [m.id, 0]))
    for (const range of this.ranges(replicationFactor)) {
      const fraction = (range.end - range.start) / TOKEN_SPACE
      for (const id of range.owners) share.set(id, (share.get(id) ?? 0) + fraction)
    }
    return share
  }

  private placement(replicationFactor: number): Placement {
    const known = this.placements.get(replicationFactor)
    if (known) return known
    if (!Number.isInteger(replicationFactor) || replicationFactor < 1) {
      throw bug(`replication factor ${replicationFactor} is not a positive integer`)
    }
    // Factors above the node count give the same lists as the node count itself.
    const r = Math.min(replicationFactor, this.nodeCount)
    const placement = this.placements.get(r) ?? this.computePlacement(r)
    this.placements.set(r, placement)
    this.placements.set(replicationFactor, placement)
    return placement
  }

  private computePlacement(r: number): Placement {
    const tokens = this.tokens
    const n = tokens.length
    if (n === 0) {
      return { owners: [], ranges: [Object.freeze({ start: 0, end: TOKEN_SPACE, owners: Object.freeze([]) })] }
    }
    const owners: (readonly string[])[] = new Array(n)
    const picked = new Uint8Array(this.nodeIds.length)
    const walk = new Uint32Array(r)
    for (let i = 0; i < n; i++) {
      let found = 0
      // Walks at most once around the ring; r never exceeds the number of distinct nodes.
      for (let j = 0; j < n && found < r; j++) {
        const node = this.vnodeNode[(i + j) % n]!
        if (picked[node]) continue
        picked[node] = 1
        walk[found++] = node
      }
      const list: string[] = new Array(found)
      for (let f = 0; f < found; f++) {
        picked[walk[f]!] = 0
        list[f] = this.nodeIds[walk[f]!]!
      }
      owners[i] = Object.freeze(list)
    }
    const ranges: TokenRange[] = []
    let start = 0
    for (let i = 0; i < n; i++) {
      const end = tokens[i]! + 1
      ranges.push(Object.freeze({ start, end, owners: owners[i]! }))
      start = end
    }
    if (start < TOKEN_SPACE) {
      owners.push(owners[0]!)
      ranges.push(Object.freeze({ start, end: TOKEN_SPACE, owners: owners[0]! }))
    }
    return { owners, ranges }
  }
}
