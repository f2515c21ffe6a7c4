import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { assignReadReplicas, type ReadAssignment } from '../../src/cluster/placement.js'
import { Ring, type RingMember, TOKEN_SPACE } from '../../src/cluster/ring.js'
import { chooseTokens, DEFAULT_VNODES, evenTokens, withoutMember } from '../../src/cluster/tokens.js'
import { prng } from '../../src/model/prng.js'
import { canonicalSeriesKey, seriesIdFromKey, seriesToken, tokenOfSeriesId } from '../../src/model/series-key.js'

/** A ring built the way a cluster grows: nodes join one at a time, each choosing its tokens. */
function grow(nodes: number, vnodes = DEFAULT_VNODES, from: RingMember[] = []): RingMember[] {
  const members = from.slice()
  for (let i = members.length; i < nodes; i++) {
    const id = `node-${i}`
    members.push({ id, tokens: chooseTokens(members, id, vnodes) })
  }
  return members
}

/** Max/mean of the ownership shares. */
function spread(ring: Ring, replicationFactor = 1): number {
  const shares = [...ring.ownership(replicationFactor).values()]
  const mean = shares.reduce((a, b) => a + b, 0) / shares.length
  return Math.max(...shares) / mean
}

/** Owners by brute force: sort every (token, id), find the first token >= t, walk clockwise. */
function bruteOwners(members: readonly RingMember[], token: number, r: number): string[] {
  const all = members.flatMap((m) => m.tokens.map((t) => ({ t, id: m.id })))
  all.sort((a, b) => a.t - b.t || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  let i = all.findIndex((v) => v.t >= token)
  if (i < 0) i = 0
  const out: string[] = []
  for (let j = 0; j < all.length && out.length < r; j++) {
    const id = all[(i + j) % all.length]!.id
    if (!out.includes(id)) out.push(id)
  }
  return out
}

// Series tokens are hashes, computed once for the tests that count moved series.
const SERIES = 100_000
const seriesTokens = new Uint32Array(SERIES)
for (let i = 0; i < SERIES; i++) {
  const key = canonicalSeriesKey('cpu_usage', [
    { key: 'host', value: `host-${i % 5000}` },
    { key: 'core', value: String(Math.floor(i / 5000)) },
  ])
  seriesTokens[i] = seriesToken(key)
}

describe('series tokens', () => {
  it('derive from the same hash as the series id', () => {
    for (const key of ['cpu', canonicalSeriesKey('mem', [{ key: 'host', value: 'a' }]), 'é\u0000x\u0000y']) {
      assert.equal(tokenOfSeriesId(seriesIdFromKey(key)), seriesToken(key))
      assert.equal(seriesIdFromKey(key).readUInt32BE(0), seriesToken(key))
    }
  })
})

describe('Ring', () => {
  const members = grow(7, 16)

  it('gives R distinct owners in clockwise order, as a brute-force walk does', () => {
    const ring = new Ring(members, 1)
    const rand = prng(1)
    const probes = [0, TOKEN_SPACE - 1]
    for (const m of members)
      for (const t of m.tokens) probes.push(t, t + 1 < TOKEN_SPACE ? t + 1 : 0, t > 0 ? t - 1 : 0)
    for (let i = 0; i < 500; i++) probes.push(Math.floor(rand() * TOKEN_SPACE))
    for (const r of [1, 2, 3, 7, 9]) {
      for (const t of probes) {
        const owners = ring.owners(t, r)
        assert.deepEqual(owners, bruteOwners(members, t, r), `token ${t}, R ${r}`)
        assert.equal(new Set(owners).size, Math.min(r, members.length))
      }
    }
  })

  it('owns a ring token by that token and the next one by its successor', () => {
    const ring = new Ring(members, 1)
    const first = members[0]!
    for (const t of first.tokens) assert.equal(ring.owners(t, 1)[0], first.id)
  })

  it('is stable: member order does not matter and lookups return the same shared list', () => {
    const a = new Ring(members, 3)
    const b = new Ring(members.slice().reverse(), 3)
    const rand = prng(2)
    for (let i = 0; i < 1000; i++) {
      const t = Math.floor(rand() * TOKEN_SPACE)
      assert.deepEqual(a.owners(t, 3), b.owners(t, 3))
      assert.equal(a.owners(t, 3), a.owners(t, 3))
    }
    assert.equal(a.version, 3)
  })

  it('covers the token space with its ranges exactly once, contiguous and in order', () => {
    for (const ring of [new Ring(members, 1), new Ring([{ id: 'a', tokens: [0, TOKEN_SPACE - 1] }], 1)]) {
      for (const r of [1, 3]) {
        const ranges = ring.ranges(r)
        assert.equal(ranges[0]!.start, 0)
        assert.equal(ranges[ranges.length - 1]!.end, TOKEN_SPACE)
        ranges.forEach((range, i) => {
          assert.ok(range.start < range.end)
          if (i > 0) assert.equal(range.start, ranges[i - 1]!.end)
          assert.equal(ring.rangeIndexOf(range.start), i)
          assert.equal(ring.rangeIndexOf(range.end - 1), i)
          assert.deepEqual(range.owners, ring.owners(range.start, r))
          assert.deepEqual(range.owners, ring.owners(range.end - 1, r))
        })
      }
    }
  })

  it('adds up ownership to min(R, nodes)', () => {
    const ring = new Ring(members, 1)
    for (const r of [1, 3, 10]) {
      const total = [...ring.ownership(r).values()].reduce((a, b) => a + b, 0)
      assert.ok(Math.abs(total - Math.min(r, members.length)) < 1e-9)
    }
  })

  it('breaks a shared token towards the smaller node id', () => {
    const ring = new Ring(
      [
        { id: 'b', tokens: [100, 200] },
        { id: 'a', tokens: [100, 300] },
      ],
      1,
    )
    assert.deepEqual(ring.owners(50, 2), ['a', 'b'])
    assert.deepEqual(ring.owners(150, 1), ['b'])
  })

  it('has no owners without tokens, and one range', () => {
    const ring = new Ring([{ id: 'a', tokens: [] }], 0)
    assert.deepEqual(ring.owners(5, 3), [])
    assert.deepEqual(ring.ranges(3), [{ start: 0, end: TOKEN_SPACE, owners: [] }])
  })

  it('rejects tokens that are not uint32 and duplicate node ids', () => {
    assert.throws(() => new Ring([{ id: 'a', tokens: [TOKEN_SPACE] }], 1), /BUG/)
    assert.throws(() => new Ring([{ id: 'a', tokens: [-1] }], 1), /BUG/)
    assert.throws(
      () =>
        new Ring(
          [
            { id: 'a', tokens: [1] },
            { id: 'a', tokens: [2] },
          ],
          1,
        ),
      /BUG/,
    )
  })
})

describe('token choice', () => {
  const ring100 = grow(100)

  it('spaces the first node evenly, offset by its id', () => {
    const tokens = evenTokens('node-0', 128)
    const step = TOKEN_SPACE / 128
    tokens.forEach((t, i) => {
      assert.ok(Math.abs(t - tokens[0]! - i * step) <= 1)
    })
    assert.notEqual(evenTokens('other', 128)[0], tokens[0])
    assert.deepEqual(chooseTokens([], 'node-0', 128), tokens)
  })

  for (const nodes of [3, 10, 100]) {
    it(`keeps primary ownership within 5 % of the mean for ${nodes} nodes`, () => {
      const ring = new Ring(ring100.slice(0, nodes), 1)
      const s = spread(ring)
      assert.ok(s <= 1.05, `max/mean ${s.toFixed(4)}`)
      // Replicas are not the target, but must stay reasonable.
      assert.ok(spread(ring, 3) <= 1.15, `R=3 max/mean ${spread(ring, 3).toFixed(4)}`)
    })
  }

  for (const nodes of [2, 3, 9, 10, 50, 99]) {
    it(`moves about 1/(N+1) of the series when node ${nodes + 1} joins`, () => {
      const before = new Ring(ring100.slice(0, nodes), 1)
      const after = new Ring(ring100.slice(0, nodes + 1), 2)
      let moved = 0
      for (const t of seriesTokens) if (before.owners(t, 1)[0] !== after.owners(t, 1)[0]) moved++
      const fraction = moved / SERIES
      const ideal = 1 / (nodes + 1)
      assert.ok(Math.abs(fraction - ideal) <= 0.1 * ideal, `moved ${fraction.toFixed(4)}, ideal ${ideal.toFixed(4)}`)
      // Only the joining node gains: every series that moved moved to it.
      const joiner = ring100[nodes]!.id
      for (const t of seriesTokens) {
        const owner = after.owners(t, 1)[0]
        if (owner !== before.owners(t, 1)[0]) assert.equal(owner, joiner)
      }
    })
  }

  it('leaves every existing token as it was, and picks new distinct uint32 tokens', () => {
    const existing = ring100.slice(0, 20)
    const snapshot = JSON.stringify(existing)
    const tokens = chooseTokens(existing, 'newcomer', DEFAULT_VNODES)
    assert.equal(JSON.stringify(existing), snapshot)
    const taken = new Set(existing.flatMap((m) => m.tokens))
    assert.equal(new Set(tokens).size, DEFAULT_VNODES)
    for (const t of tokens) {
      assert.ok(Number.isInteger(t) && t >= 0 && t < TOKEN_SPACE)
      assert.ok(!taken.has(t))
    }
  })

  it('is deterministic and gives a restarting node its own tokens', () => {
    const existing = ring100.slice(0, 12)
    const shuffled = existing.slice().reverse()
    assert.deepEqual(chooseTokens(existing, 'x', 64), chooseTokens(shuffled, 'x', 64))
    const member = existing[5]!
    assert.deepEqual(
      chooseTokens(existing, member.id, 64),
      member.tokens.slice().sort((a, b) => a - b),
    )
  })

  it('gives a joining node a share in proportion to its token count', () => {
    const existing = ring100.slice(0, 4)
    const id = 'half'
    const ring = new Ring([...existing, { id, tokens: chooseTokens(existing, id, DEFAULT_VNODES / 2) }], 1)
    const share = ring.ownership().get(id)!
    assert.ok(Math.abs(share - 1 / 9) < 0.001, `share ${share}`)
  })

  it('moves only the series of a removed node, and the next join evens the ring again', () => {
    const before = new Ring(ring100.slice(0, 10), 1)
    const removed = withoutMember(ring100.slice(0, 10), 'node-4')
    const after = new Ring(removed, 2)
    for (const t of seriesTokens.subarray(0, 20_000)) {
      const was = before.owners(t, 1)[0]
      if (was !== 'node-4') assert.equal(after.owners(t, 1)[0], was)
    }
    const rejoined = [...removed, { id: 'node-new', tokens: chooseTokens(removed, 'node-new', DEFAULT_VNODES) }]
    const s = spread(new Ring(rejoined, 3))
    assert.ok(s <= 1.05, `max/mean after removal and a join ${s.toFixed(4)}`)
  })
})

describe('read replicas', () => {
  const members = grow(10)
  const ring = new Ring(members, 1)
  const all = new Set(members.map((m) => m.id))

  /** The node that reads each range, checking that no range is read twice and only by an owner. */
  function readers(assignment: ReadAssignment, r: number): (string | undefined)[] {
    const ranges = ring.ranges(r)
    const who: (string | undefined)[] = new Array(ranges.length)
    for (const [id, list] of assignment) {
      let previous = -1
      for (const range of list) {
        const i = ring.rangeIndexOf(range.start)
        assert.equal(ranges[i], range)
        assert.ok(i > previous, 'ranges out of token order')
        previous = i
        assert.equal(who[i], undefined, 'a range is read twice')
        assert.ok(range.owners.includes(id))
        who[i] = id
      }
    }
    return who
  }

  it('reads every range exactly once and spreads the reads evenly', () => {
    const assignment = assignReadReplicas(ring, 3, all)
    assert.deepEqual(assignment.unavailable, [])
    assert.ok(readers(assignment, 3).every((id) => id !== undefined))
    const loads = [...assignment.values()].map((list) => list.reduce((a, s) => a + s.end - s.start, 0))
    assert.equal(
      loads.reduce((a, b) => a + b, 0),
      TOKEN_SPACE,
    )
    const mean = TOKEN_SPACE / members.length
    assert.ok(Math.max(...loads) / mean <= 1.05, `read load max/mean ${Math.max(...loads) / mean}`)
  })

  it('reads locally what the preferred node owns', () => {
    const assignment = assignReadReplicas(ring, 3, all, 'node-3')
    const owned = ring.ranges(3).filter((range) => range.owners.includes('node-3'))
    assert.deepEqual(assignment.get('node-3'), owned)
    const three = new Ring(members.slice(0, 3), 1)
    const local = assignReadReplicas(three, 3, new Set(['node-0', 'node-1', 'node-2']), 'node-1')
    assert.deepEqual([...local.keys()], ['node-1'])
    assert.deepEqual(local.get('node-1'), three.ranges(3))
  })

  it('avoids unhealthy owners and reports ranges none of whose owners is healthy', () => {
    const healthy = new Set(all)
    healthy.delete('node-1')
    healthy.delete('node-2')
    const assignment = assignReadReplicas(ring, 2, healthy)
    const who = readers(assignment, 2)
    const ranges = ring.ranges(2)
    const down = ranges.filter((r) => r.owners.every((o) => !healthy.has(o)))
    assert.ok(down.length > 0)
    assert.deepEqual(assignment.unavailable, down)
    ranges.forEach((range, i) => {
      if (down.includes(range)) assert.equal(who[i], undefined)
      else assert.ok(healthy.has(who[i]!))
    })
    assert.deepEqual([...new Set(assignment.unavailable.flatMap((r) => r.owners))].sort(), ['node-1', 'node-2'])
  })
})
