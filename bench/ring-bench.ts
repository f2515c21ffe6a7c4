// npm run bench -- --ring (or node --import tsx bench/ring-bench.ts): the hash ring alone, no
// servers. Rings grow by joining nodes one at a time with chooseTokens, for 64 and 128 tokens per
// node, and the table shows at 3, 10 and 100 nodes:
// - the ownership spread, max/mean of each node's share: as primary (R = 1, target <= 1.05) and as
//   any of 3 replicas (R = 3);
// - the fraction of 100,000 series whose primary owner changed on the join that made N nodes, against
//   the ideal 1/N (target within 10 %);
// - the spread after one node is removed (its tokens dropped);
// and beside them random tokens, as rings without token choice get them. Then owners() lookups per
// second on the 100-node ring, and the cost of a series token.
import { Ring, type RingMember, TOKEN_SPACE } from '../src/cluster/ring.js'
import { chooseTokens, DEFAULT_VNODES, withoutMember } from '../src/cluster/tokens.js'
import { prng } from '../src/model/prng.js'
import { canonicalSeriesKey, seriesIdFromKey, seriesToken, tokenOfSeriesId } from '../src/model/series-key.js'

const SIZES = [3, 10, 100]
const SERIES = 100_000
const LOOKUPS = 2_000_000

function spread(ring: Ring, replicationFactor: number): number {
  const shares = [...ring.ownership(replicationFactor).values()]
  const mean = shares.reduce((a, b) => a + b, 0) / shares.length
  return Math.max(...shares) / mean
}

function seriesKeys(): string[] {
  return Array.from({ length: SERIES }, (_, i) =>
    canonicalSeriesKey('cpu_usage', [
      { key: 'host', value: `host-${i % 5000}` },
      { key: 'region', value: `region-${Math.floor(i / 5000)}` },
    ]),
  )
}

function movedFraction(before: Ring, after: Ring, tokens: Uint32Array): number {
  let moved = 0
  for (const t of tokens) if (before.owners(t, 1)[0] !== after.owners(t, 1)[0]) moved++
  return moved / tokens.length
}

interface Row {
  readonly tokens: string
  readonly nodes: number
  readonly r1: number
  readonly r3: number
  readonly moved: number
  readonly removedR1: number
  readonly removedR3: number
}

function grown(vnodes: number, seriesTokens: Uint32Array): { rows: Row[]; worst: number; ring: Ring } {
  const members: RingMember[] = []
  const rows: Row[] = []
  let worst = 0
  let ring = new Ring(members, 0)
  for (let n = 1; n <= Math.max(...SIZES); n++) {
    const id = `node-${n}`
    const before = ring
    members.push({ id, tokens: chooseTokens(members, id, vnodes) })
    ring = new Ring(members, n)
    if (n > 1) worst = Math.max(worst, spread(ring, 1))
    if (!SIZES.includes(n)) continue
    const removed = new Ring(withoutMember(members, 'node-2'), n + 1)
    rows.push({
      tokens: `chosen, ${vnodes}`,
      nodes: n,
      r1: spread(ring, 1),
      r3: spread(ring, 3),
      moved: movedFraction(before, ring, seriesTokens),
      removedR1: spread(removed, 1),
      removedR3: spread(removed, 3),
    })
  }
  return { rows, worst, ring }
}

function randomRows(vnodes: number, seriesTokens: Uint32Array): Row[] {
  const rand = prng(7)
  const members: RingMember[] = []
  const rows: Row[] = []
  let ring = new Ring(members, 0)
  for (let n = 1; n <= Math.max(...SIZES); n++) {
    const before = ring
    members.push({ id: `node-${n}`, tokens: Array.from({ length: vnodes }, () => Math.floor(rand() * TOKEN_SPACE)) })
    ring = new Ring(members, n)
    if (!SIZES.includes(n)) continue
    const removed = new Ring(withoutMember(members, 'node-2'), n + 1)
    rows.push({
      tokens: `random, ${vnodes}`,
      nodes: n,
      r1: spread(ring, 1),
      r3: spread(ring, 3),
      moved: movedFraction(before, ring, seriesTokens),
      removedR1: spread(removed, 1),
      removedR3: spread(removed, 3),
    })
  }
  return rows
}

function perSecond(count: number, run: () => void): number {
  const t = performance.now()
  run()
  return count / ((performance.now() - t) / 1000)
}

export function ringBench(): void {
  const keys = seriesKeys()
  const seriesTokens = Uint32Array.from(keys, seriesToken)
  const rows: Row[] = []
  const worst: string[] = []
  let ring100: Ring | undefined
  for (const vnodes of [64, 128]) {
    const t = performance.now()
    const g = grown(vnodes, seriesTokens)
    rows.push(...g.rows)
    worst.push(
      `${vnodes} tokens: worst R = 1 max/mean over every size from 2 to 100 nodes ${g.worst.toFixed(4)}; growing to 100 nodes took ${(performance.now() - t).toFixed(0)} ms with the measurements`,
    )
    if (vnodes === DEFAULT_VNODES) ring100 = g.ring
  }
  rows.push(...randomRows(DEFAULT_VNODES, seriesTokens))

  const lines = [
    '| tokens, per node | nodes | R=1 max/mean | R=3 max/mean | moved on the join / ideal 1/N | after removing one node, R=1 / R=3 max/mean |',
    '|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.tokens} | ${r.nodes} | ${r.r1.toFixed(4)} | ${r.r3.toFixed(4)} | ${r.moved.toFixed(4)} / ${(1 / r.nodes).toFixed(4)} (${((r.moved * r.nodes - 1) * 100).toFixed(1)} %) | ${r.removedR1.toFixed(4)} / ${r.removedR3.toFixed(4)} |`,
    ),
  ]
  console.log(`\n${lines.join('\n')}\n`)
  for (const line of worst) console.log(line)

  const ring = ring100!
  const rand = prng(11)
  const probes = Uint32Array.from({ length: LOOKUPS }, () => Math.floor(rand() * TOKEN_SPACE))
  ring.owners(0, 3)
  let sink = 0
  for (let i = 0; i < 100_000; i++) sink += ring.owners(probes[i]!, 3).length
  const lookups = perSecond(LOOKUPS, () => {
    for (const t of probes) sink += ring.owners(t, 3).length
  })
  const ids = keys.map((k) => seriesIdFromKey(k))
  const fromKey = perSecond(SERIES, () => {
    for (const k of keys) sink += seriesToken(k)
  })
  const fromId = perSecond(SERIES, () => {
    for (const id of ids) sink += tokenOfSeriesId(id)
  })
  const fmt = (n: number): string => Math.round(n).toLocaleString('en')
  console.log(`owners(token, 3) on 100 nodes x ${DEFAULT_VNODES} tokens: ${fmt(lookups)} lookups/s`)
  console.log(`seriesToken(key): ${fmt(fromKey)}/s; tokenOfSeriesId(id): ${fmt(fromId)}/s`)
  if (sink === -1) console.log('unreachable')
}

if (import.meta.url === `file://${process.argv[1]}`) ringBench()
