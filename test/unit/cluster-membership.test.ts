// Membership against the in-process Consul emulator: joining, tokens, the healthy set, the ring, and
// what happens when Consul goes away and comes back.
import assert from 'node:assert/strict'
import { afterEach, test } from 'node:test'
import { type JoinParams, Membership, type MembershipOptions } from '../../src/cluster/membership.js'
import type { Logger } from '../../src/engine/config.js'
import { UnavailableError, ValidationError } from '../../src/model/errors.js'
import { type ConsulEmulator, startConsulEmulator } from '../fixtures/consul-emulator.js'
import { waitFor } from '../fixtures/wait.js'

interface LogLine {
  level: 'info' | 'warn' | 'error'
  msg: string
  obj: object
}

function recordingLogger(lines: LogLine[]): Logger {
  return {
    info: (obj, msg = '') => lines.push({ level: 'info', msg, obj }),
    warn: (obj, msg = '') => lines.push({ level: 'warn', msg, obj }),
    error: (obj, msg = '') => lines.push({ level: 'error', msg, obj }),
  }
}

/** Hands out the tokens after the highest one taken: distinct, and trivially checkable. */
const nextTokens: JoinParams['chooseTokens'] = (existing, _id, count) => {
  const start = Math.max(-1, ...existing.flatMap((e) => e.tokens)) + 1
  return Array.from({ length: count }, (_, i) => start + i)
}

const join = (rf = 2): JoinParams => ({ vnodes: 4, replicationFactor: rf, chooseTokens: nextTokens })

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function emulator(port = 0): Promise<ConsulEmulator> {
  const e = await startConsulEmulator({ port })
  let closed = false
  const close = e.close.bind(e)
  cleanups.push(async () => {
    if (!closed) await close()
  })
  return Object.assign(e, {
    close: async () => {
      closed = true
      await close()
    },
  })
}

function node(consul: ConsulEmulator, id: string, lines: LogLine[] = [], extra: Partial<MembershipOptions> = {}) {
  const m = new Membership(
    {
      consulUrl: consul.url,
      token: 'secret-token',
      clusterName: 'test',
      self: {
        id,
        grpcAddress: `127.0.0.1:${7000 + id.charCodeAt(0)}`,
        peerAddress: `127.0.0.1:${8000 + id.charCodeAt(0)}`,
      },
      ttlMs: 600,
      watchWaitMs: 1000,
      ...extra,
    },
    recordingLogger(lines),
  )
  cleanups.push(() => m.stop())
  return m
}

test('three nodes join at once, get distinct tokens, and agree on the ring and the healthy set', async () => {
  const consul = await emulator()
  const nodes = [node(consul, 'a'), node(consul, 'b'), node(consul, 'c')]
  const seen: number[] = []
  nodes[0]?.onRing((ring) => seen.push(ring.version))
  await Promise.all(nodes.map((m) => m.start()))
  const rings = await Promise.all(nodes.map((m) => m.join(join())))

  const ids = ['a', 'b', 'c']
  assert.ok(
    rings.every((r, i) => r.members.some((m) => m.id === ids[i])),
    'the ring each join returns holds the node that joined',
  )
  await waitFor('every node to see three members', () => nodes.every((m) => m.ring()?.members.length === 3))
  const ring = nodes[0]?.ring()
  assert.ok(ring)
  assert.equal(ring.replicationFactor, 2)
  assert.equal(ring.vnodes, 4)
  assert.deepEqual(
    ring.members.map((m) => m.id),
    ['a', 'b', 'c'],
  )
  const tokens = ring.members.flatMap((m) => m.tokens)
  assert.equal(new Set(tokens).size, 12, 'tokens are distinct across nodes')
  for (const m of ring.members) {
    assert.equal(m.tokens.length, 4)
    assert.equal(m.state, 'active')
  }
  assert.equal(ring.members.find((m) => m.id === 'b')?.peerAddress, `127.0.0.1:${8000 + 'b'.charCodeAt(0)}`)
  await waitFor('the same ring version everywhere', () => nodes.every((m) => m.ring()?.version === ring.version))
  assert.equal(ring.version, 3, 'each join bumped the version once')
  assert.deepEqual(
    seen.toSorted((x, y) => x - y),
    seen,
    'ring versions reach listeners in order',
  )

  await waitFor('every node to see all three healthy', () => nodes.every((m) => m.healthy().size === 3))
  assert.deepEqual(nodes[2]?.healthy().get('a'), {
    grpcAddress: `127.0.0.1:${7000 + 'a'.charCodeAt(0)}`,
    peerAddress: `127.0.0.1:${8000 + 'a'.charCodeAt(0)}`,
  })
  assert.ok(consul.tokens.includes('secret-token'), 'every call carries the ACL token')
  assert.ok(nodes.every((m) => m.consulReachable))
})

test('a node restarted with the same id keeps its tokens and updates its addresses', async () => {
  const consul = await emulator()
  const a = node(consul, 'a')
  const b = node(consul, 'b')
  await Promise.all([a.start(), b.start()])
  await a.join(join())
  const before = await b.join(join())
  const tokens = before.members.find((m) => m.id === 'b')?.tokens
  await b.stop()

  const again = node(consul, 'b', [], {
    self: { id: 'b', grpcAddress: '127.0.0.1:9100', peerAddress: '127.0.0.1:9101' },
  })
  await again.start()
  const after = await again.join({ ...join(), chooseTokens: () => assert.fail('a returning node keeps its tokens') })
  const record = after.members.find((m) => m.id === 'b')
  assert.deepEqual(record?.tokens, tokens)
  assert.equal(record?.grpcAddress, '127.0.0.1:9100')
  assert.equal(record?.peerAddress, '127.0.0.1:9101')
  assert.equal(after.version, before.version + 1, 'the address change is a ring change')
  await waitFor('a to see the new address', () => a.ring()?.version === after.version)

  // Restarting with nothing changed writes nothing.
  await again.stop()
  const third = node(consul, 'b', [], {
    self: { id: 'b', grpcAddress: '127.0.0.1:9100', peerAddress: '127.0.0.1:9101' },
  })
  await third.start()
  assert.equal((await third.join(join())).version, after.version)
})

test("a node configured with another replication factor uses the cluster's and warns", async () => {
  const consul = await emulator()
  const lines: LogLine[] = []
  const a = node(consul, 'a')
  const b = node(consul, 'b', lines)
  await Promise.all([a.start(), b.start()])
  await a.join(join(3))
  const ring = await b.join({ vnodes: 8, replicationFactor: 1, chooseTokens: nextTokens })
  assert.equal(ring.replicationFactor, 3)
  assert.equal(ring.vnodes, 4)
  assert.equal(ring.members.find((m) => m.id === 'b')?.tokens.length, 4, "the cluster's vnodes count")
  assert.ok(lines.some((l) => l.level === 'warn' && /replication factor differs/.test(l.msg)))
  assert.ok(lines.some((l) => l.level === 'warn' && /vnodes differs/.test(l.msg)))
})

test('a stopped node leaves the healthy set at once; its ring entry stays', async () => {
  const consul = await emulator()
  const a = node(consul, 'a')
  const b = node(consul, 'b')
  await Promise.all([a.start(), b.start()])
  await a.join(join())
  await b.join(join())
  await waitFor('both healthy', () => a.healthy().size === 2)
  const healthySets: string[][] = []
  a.onHealthy((h) => healthySets.push([...h.keys()]))
  await b.stop()
  await waitFor('b to leave the healthy set', () => !a.healthy().has('b'), 2000)
  assert.deepEqual(healthySets.at(-1), ['a'])
  assert.equal(a.ring()?.members.length, 2, 'health changes routing only, never placement')
})

test('a node whose check is not renewed goes unhealthy', async () => {
  const consul = await emulator()
  const a = node(consul, 'a')
  await a.start()
  await waitFor('a healthy', () => a.healthy().has('a'))
  // Registered by hand and never renewed: its TTL check stays critical.
  await fetch(`${consul.url}/v1/agent/service/register`, {
    method: 'PUT',
    body: JSON.stringify({
      Name: 'test',
      ID: 'test-z',
      Address: '127.0.0.1',
      Port: 1,
      Meta: { node_id: 'z', peer_address: '127.0.0.1:2' },
      Check: { TTL: '1s', Status: 'passing' },
    }),
  })
  await waitFor('z healthy', () => a.healthy().has('z'))
  await waitFor('z to go critical', () => !a.healthy().has('z'), 5000)
})

test('while Consul is paused the last ring and healthy set stay; the outage is logged once; all resumes', async () => {
  const consul = await emulator()
  const lines: LogLine[] = []
  const a = node(consul, 'a', lines)
  const b = node(consul, 'b')
  await Promise.all([a.start(), b.start()])
  await a.join(join())
  await b.join(join())
  await waitFor('both healthy and on one ring', () => a.healthy().size === 2 && a.ring()?.members.length === 2)
  const ring = a.ring()
  const healthy = a.healthy()
  const states: boolean[] = []
  a.onConsulState((s) => states.push(s.reachable))

  consul.pause()
  await waitFor('a to notice the outage', () => !a.consulReachable, 5000)
  // Let several renewals and watch retries fail.
  await new Promise((r) => setTimeout(r, 2500))
  assert.equal(a.ring(), ring, 'the last known ring stays')
  assert.equal(a.healthy(), healthy, 'the last known healthy set stays')
  assert.equal(lines.filter((l) => /unreachable/.test(l.msg)).length, 1, 'logged once per outage, not per retry')
  assert.equal(a.consulState().outages, 1)
  assert.ok(a.consulState().lastError)

  consul.resume()
  await waitFor('a to see Consul again', () => a.consulReachable, 15_000)
  assert.deepEqual(states, [false, true])
  assert.ok(lines.some((l) => /reachable again/.test(l.msg)))
  await new Promise((r) => setTimeout(r, 1000))
  assert.equal(a.healthy().size, 2, 'nobody was marked down by the pause')
})

test('when Consul restarts empty, nodes register again and keep the last ring', async () => {
  const first = await emulator()
  const lines: LogLine[] = []
  const a = node(first, 'a', lines)
  const b = node(first, 'b')
  await Promise.all([a.start(), b.start()])
  await a.join(join())
  await b.join(join())
  await waitFor('both healthy', () => a.healthy().size === 2)
  const ring = a.ring()

  await first.close()
  await waitFor('a to notice the outage', () => !a.consulReachable, 5000)
  const second = await emulator(first.port)
  await waitFor('a to see Consul again', () => a.consulReachable, 15_000)
  // The healthy sets still hold what the first Consul said until a watch hears from the second, so
  // the new Consul's own answer decides when both have registered again.
  await waitFor(
    'both to register again with the new Consul',
    async () =>
      ((await (await fetch(`${second.url}/v1/health/service/test?passing`)).json()) as unknown[]).length === 2,
    15_000,
    50,
  )
  await waitFor('both healthy as the new Consul says', () => a.healthy().size === 2 && b.healthy().size === 2, 15_000)
  assert.ok(lines.some((l) => /registering again/.test(l.msg)))
  assert.equal(a.ring(), ring, 'the ring Consul lost is kept')
})

test('options are validated; join after stop fails as unavailable', async () => {
  const base: MembershipOptions = {
    consulUrl: '127.0.0.1:8500',
    clusterName: 'v3',
    self: { id: 'n1', grpcAddress: '127.0.0.1:5000', peerAddress: '127.0.0.1:5001' },
  }
  const m = new Membership(base)
  assert.equal(m.config.consulUrl, 'http://127.0.0.1:8500')
  assert.equal(m.config.ttlMs, 10_000)
  assert.equal(m.config.watchWaitMs, 30_000)
  assert.equal(m.config.deregisterCriticalAfterMs, 60_000)
  assert.throws(() => new Membership({ ...base, consulUrl: 'ftp://x' }), ValidationError)
  assert.throws(() => new Membership({ ...base, clusterName: 'a/b' }), ValidationError)
  assert.throws(() => new Membership({ ...base, self: { ...base.self, grpcAddress: 'nohost' } }), ValidationError)
  assert.throws(() => new Membership({ ...base, self: { ...base.self, id: 'a b' } }), ValidationError)
  assert.throws(() => new Membership({ ...base, ttlMs: 0 }), ValidationError)
  assert.equal(
    new Membership({ ...base, self: { ...base.self, grpcAddress: '[::1]:5000' } }).config.self.grpcAddress,
    '[::1]:5000',
  )
  await m.stop()
  await assert.rejects(m.join(join()), UnavailableError)
})
