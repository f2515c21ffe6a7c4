// What a membership change moves (movePlan): every piece of the token space a node gains, from
// whom, and nothing else.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { MemberInfo, RingSnapshot } from '../../src/cluster/cluster-engine.js'
import { movePlan } from '../../src/cluster/rebalance.js'
import { Ring, TOKEN_SPACE } from '../../src/cluster/ring.js'
import { chooseTokens, evenTokens } from '../../src/cluster/tokens.js'

function member(id: string, tokens: readonly number[], state: MemberInfo['state'] = 'active'): MemberInfo {
  return { id, grpcAddress: `${id}:1`, peerAddress: `${id}:2`, tokens, state }
}

function cluster(ids: readonly string[], vnodes: number): MemberInfo[] {
  const out: MemberInfo[] = []
  for (const id of ids) {
    const tokens = out.length === 0 ? evenTokens(id, vnodes) : chooseTokens(out, id, vnodes)
    out.push(member(id, tokens))
  }
  return out
}

/** The owners of `token` in the ring of `members`, with the factor capped to their number. */
function ownersAt(members: readonly MemberInfo[], token: number, rf: number): readonly string[] {
  return new Ring(members, 1).owners(token, Math.min(rf, members.length))
}

/** Checks the plan piece by piece against both rings at sample tokens of every piece. */
function checkPlan(snapshot: RingSnapshot, up: (id: string) => boolean): void {
  const serving = snapshot.members.filter((m) => m.state !== 'joining')
  const target = snapshot.members.filter((m) => m.state !== 'leaving')
  const plan = movePlan(snapshot, up)
  const gained = new Map<number, Map<string, string>>()
  for (const [gainer, gains] of plan.gains) {
    let previousEnd = -1
    for (const g of gains) {
      assert.ok(g.span.start < g.span.end && g.span.start >= previousEnd, `${gainer}'s ranges are sorted and apart`)
      previousEnd = g.span.end
      for (const t of [g.span.start, g.span.end - 1, Math.floor((g.span.start + g.span.end) / 2)]) {
        const before = ownersAt(serving, t, snapshot.replicationFactor)
        const after = ownersAt(target, t, snapshot.replicationFactor)
        assert.ok(after.includes(gainer) && !before.includes(gainer), `${gainer} gains token ${t}`)
        assert.ok(before.includes(g.source) && up(g.source), `token ${t} comes from a current owner that is up`)
        const losers = before.filter((id) => !after.includes(id) && up(id))
        if (losers.length > 0) assert.ok(losers.includes(g.source), `token ${t} comes from the node giving it up`)
        const byGainer = gained.get(t) ?? new Map<string, string>()
        byGainer.set(gainer, g.source)
        gained.set(t, byGainer)
      }
    }
  }
  // Every token sampled on a grid whose owners gain a node is in the plan, or orphaned.
  for (let t = 0; t < TOKEN_SPACE; t += 7_919_993) {
    const before = ownersAt(serving, t, snapshot.replicationFactor)
    const after = ownersAt(target, t, snapshot.replicationFactor)
    for (const gainer of after.filter((id) => !before.includes(id))) {
      const covered = (plan.gains.get(gainer) ?? []).some((g) => g.span.start <= t && t < g.span.end)
      const orphan = plan.orphaned.some((s) => s.start <= t && t < s.end)
      assert.ok(covered || orphan, `token ${t} moves to ${gainer}`)
      assert.equal(orphan, !before.some(up), `token ${t} is orphaned exactly when no owner is up`)
    }
  }
}

test('a join moves to the new node exactly the ranges it takes, each from the node giving it up', () => {
  const members = cluster(['a', 'b', 'c'], 32)
  const joining = member('d', chooseTokens(members, 'd', 32), 'joining')
  for (const rf of [1, 2, 3]) {
    const snapshot: RingSnapshot = { version: 5, replicationFactor: rf, members: [...members, joining] }
    checkPlan(snapshot, () => true)
    const plan = movePlan(snapshot, () => true)
    assert.deepEqual([...plan.gains.keys()], ['d'], 'only the joining node gains')
    const share = plan.gains.get('d')!.reduce((n, g) => n + (g.span.end - g.span.start), 0) / TOKEN_SPACE
    // d held nothing: it gains exactly its share of the target ring.
    const owned = new Ring([...members, joining], 1).ownership(rf).get('d')!
    assert.ok(Math.abs(share - owned) < 1e-9, `d gains ${share} of the space with R = ${rf}, owns ${owned}`)
  }
})

test('a decommission moves the leaving node ranges to their new owners, from the leaving node', () => {
  const members = cluster(['a', 'b', 'c', 'd'], 32).map((m) => (m.id === 'b' ? { ...m, state: 'leaving' as const } : m))
  const snapshot: RingSnapshot = { version: 9, replicationFactor: 2, members }
  checkPlan(snapshot, () => true)
  const plan = movePlan(snapshot, () => true)
  assert.ok(!plan.gains.has('b'), 'the leaving node gains nothing')
  for (const gains of plan.gains.values()) for (const g of gains) assert.equal(g.source, 'b')
  assert.deepEqual(plan.orphaned, [])
})

test('a dead node being removed is never a source; with R = 1 its ranges are orphaned', () => {
  const members = cluster(['a', 'b', 'c', 'd'], 32).map((m) => (m.id === 'c' ? { ...m, state: 'leaving' as const } : m))
  const up = (id: string) => id !== 'c'
  const replicated: RingSnapshot = { version: 3, replicationFactor: 2, members }
  checkPlan(replicated, up)
  const plan = movePlan(replicated, up)
  for (const gains of plan.gains.values()) for (const g of gains) assert.notEqual(g.source, 'c')
  assert.deepEqual(plan.orphaned, [], 'with R = 2 every range has a surviving copy')
  const single: RingSnapshot = { version: 3, replicationFactor: 1, members }
  checkPlan(single, up)
  const orphaned = movePlan(single, up).orphaned.reduce((n, s) => n + (s.end - s.start), 0) / TOKEN_SPACE
  assert.ok(Math.abs(orphaned - 0.25) < 0.02, `c's quarter has no copy left: ${orphaned}`)
})

test('no change moves nothing', () => {
  const snapshot: RingSnapshot = { version: 1, replicationFactor: 3, members: cluster(['a', 'b', 'c', 'd'], 16) }
  const plan = movePlan(snapshot, () => true)
  assert.equal(plan.gains.size, 0)
  assert.deepEqual(plan.orphaned, [])
})
