// Membership against the in-process Consul emulator: the healthy set, the ring the leader commits
// under its term and how every node converges on it, fencing of a deposed leader's ring changes, the
// cluster meta (leader, decommission requests, move progress), and what happens when Consul goes
// away and comes back.
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { type AddressInfo, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, test } from 'node:test'
import {
  type Blocking,
  type ConsulClient,
  type Indexed,
  type KvPair,
  type KvWrite,
  NpmConsulClient,
  type ServiceInstance,
  type ServiceRegistration,
} from '../../src/cluster/consul-client.js'
import { LeaderElection } from '../../src/cluster/leader.js'
import {
  type ClusterMeta,
  type ClusterSettings,
  type MemberRecord,
  Membership,
  type MembershipOptions,
  type MoveProgress,
  type NodeState,
  type RingState,
} from '../../src/cluster/membership.js'
import { RingLeader } from '../../src/cluster/ring-leader.js'
import { RingFile, RingRestore } from '../../src/cluster/ring-restore.js'
import { ZmqPeerTransport } from '../../src/cluster/zmq-peer-transport.js'
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

const warnings = (lines: readonly LogLine[], pattern: RegExp) =>
  lines.filter((l) => l.level === 'warn' && pattern.test(l.msg)).length

const cleanups: (() => Promise<void> | void)[] = []
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

/**
 * A client that counts the calls that succeeded and failed, by method, and can hold back the answers
 * of the ring watch (the blocking kvList calls), which is what a node whose watch lags behind sees.
 */
class ProbeClient implements ConsulClient {
  private readonly ok = new Map<string, number>()
  private readonly failed = new Map<string, number>()
  private watchGate: Promise<void> | undefined
  private healthGate: Promise<void> | undefined

  constructor(private readonly inner: ConsulClient) {}

  succeeded(what: string): number {
    return this.ok.get(what) ?? 0
  }

  failures(what: string): number {
    return this.failed.get(what) ?? 0
  }

  /** Holds back the ring watch's answers, the one in flight included, until the returned function runs. */
  holdWatch(): () => void {
    return this.hold('watchGate')
  }

  /**
   * Holds back every health answer (passingInstances), the one in flight included, until the returned
   * function runs. A held call then asks again, so that what it answers is current at the release,
   * not what Consul said before.
   */
  holdHealth(): () => void {
    return this.hold('healthGate')
  }

  private hold(gate: 'watchGate' | 'healthGate'): () => void {
    let release = () => {}
    this[gate] = new Promise<void>((resolve) => {
      release = resolve
    })
    const done = () => {
      this[gate] = undefined
      release()
    }
    cleanups.push(done)
    return done
  }

  private async run<T>(what: string, call: () => Promise<T>, blocking?: Blocking): Promise<T> {
    try {
      let result = await call()
      if (what === 'kvList' && blocking !== undefined && blocking.index > 0) await this.watchGate
      if (what === 'passingInstances' && this.healthGate !== undefined) {
        await this.healthGate
        result = await call()
      }
      this.ok.set(what, this.succeeded(what) + 1)
      return result
    } catch (err) {
      this.failed.set(what, this.failures(what) + 1)
      throw err
    }
  }

  registerService(r: ServiceRegistration, signal?: AbortSignal): Promise<void> {
    return this.run('registerService', () => this.inner.registerService(r, signal))
  }
  deregisterService(id: string, signal?: AbortSignal): Promise<void> {
    return this.run('deregisterService', () => this.inner.deregisterService(id, signal))
  }
  passCheck(checkId: string, signal?: AbortSignal): Promise<void> {
    return this.run('passCheck', () => this.inner.passCheck(checkId, signal))
  }
  passingInstances(service: string, blocking: Blocking, signal?: AbortSignal): Promise<Indexed<ServiceInstance[]>> {
    return this.run('passingInstances', () => this.inner.passingInstances(service, blocking, signal))
  }
  kvList(prefix: string, blocking: Blocking, signal?: AbortSignal): Promise<Indexed<KvPair[]>> {
    return this.run('kvList', () => this.inner.kvList(prefix, blocking, signal), blocking)
  }
  kvGet(key: string, signal?: AbortSignal): Promise<KvPair | undefined> {
    return this.run('kvGet', () => this.inner.kvGet(key, signal))
  }
  kvPut(key: string, value: string, write: KvWrite, signal?: AbortSignal): Promise<boolean> {
    return this.run('kvPut', () => this.inner.kvPut(key, value, write, signal))
  }
  kvDelete(key: string, write: { cas?: number }, signal?: AbortSignal): Promise<boolean> {
    return this.run('kvDelete', () => this.inner.kvDelete(key, write, signal))
  }
  createSession(s: { name: string; ttlMs: number; lockDelayMs: number }, signal?: AbortSignal): Promise<string> {
    return this.run('createSession', () => this.inner.createSession(s, signal))
  }
  renewSession(id: string, signal?: AbortSignal): Promise<void> {
    return this.run('renewSession', () => this.inner.renewSession(id, signal))
  }
  destroySession(id: string, signal?: AbortSignal): Promise<void> {
    return this.run('destroySession', () => this.inner.destroySession(id, signal))
  }
  close(): void {
    this.inner.close()
  }
}

/** A probe around the client Membership would make itself (its timeout is what a 600 ms TTL gives). */
function probeClient(consul: ConsulEmulator): ProbeClient {
  return new ProbeClient(new NpmConsulClient(consul.url, 'secret-token', 1000))
}

function node(
  consul: ConsulEmulator,
  id: string,
  lines: LogLine[] = [],
  extra: Partial<MembershipOptions> = {},
  client?: ConsulClient,
) {
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
    undefined,
    client,
  )
  cleanups.push(() => m.stop())
  return m
}

const SETTINGS: ClusterSettings = { replicationFactor: 2, vnodes: 4 }

/** Four tokens per node, apart from every other node's: the leader's token choice is not under test. */
function tokensOf(id: string): number[] {
  const base = id.charCodeAt(0) * 16
  return [base, base + 1, base + 2, base + 3]
}

/** The record a leader would commit for `m`, at the addresses it registered with. */
function memberOf(m: Membership, state: NodeState = 'active'): MemberRecord {
  const { id, grpcAddress, peerAddress } = m.config.self
  return { id, grpcAddress, peerAddress, tokens: tokensOf(id), state }
}

/** The signal of a leader's term; it ends with the test. */
function termSignal(): AbortSignal {
  const term = new AbortController()
  cleanups.push(() => term.abort())
  return term.signal
}

// ---- Consul KV and sessions, straight through the emulator's HTTP API ----

interface RawPair {
  readonly value: string
  readonly modifyIndex: number
  readonly lockIndex: number
  readonly session: string | undefined
}

async function kvRead(consul: ConsulEmulator, key: string): Promise<RawPair | undefined> {
  const res = await fetch(`${consul.url}/v1/kv/${key}`)
  if (res.status === 404) return undefined
  assert.equal(res.status, 200)
  const [e] = (await res.json()) as {
    Value: string | null
    ModifyIndex: number
    LockIndex: number
    Session?: string
  }[]
  assert.ok(e)
  return {
    value: e.Value === null ? '' : Buffer.from(e.Value, 'base64').toString('utf8'),
    modifyIndex: e.ModifyIndex,
    lockIndex: e.LockIndex,
    session: e.Session,
  }
}

async function kvJson(consul: ConsulEmulator, key: string): Promise<unknown> {
  const pair = await kvRead(consul, key)
  return pair === undefined ? undefined : JSON.parse(pair.value)
}

async function kvWrite(consul: ConsulEmulator, key: string, value: string, query = ''): Promise<boolean> {
  const res = await fetch(`${consul.url}/v1/kv/${key}${query}`, { method: 'PUT', body: value })
  const text = await res.text()
  assert.equal(res.status, 200, text)
  return text.trim() === 'true'
}

async function kvDelete(consul: ConsulEmulator, key: string): Promise<void> {
  const res = await fetch(`${consul.url}/v1/kv/${key}`, { method: 'DELETE' })
  assert.equal(res.status, 200)
}

interface Lock {
  readonly session: string
  /** term is the lock key's LockIndex after the acquire. */
  readonly term: number
}

/** Takes `test/leader` for `id` with a new session, as the leader election does; LockIndex is the term. */
async function acquireLeader(consul: ConsulEmulator, id: string): Promise<Lock> {
  const res = await fetch(`${consul.url}/v1/session/create`, {
    method: 'PUT',
    body: JSON.stringify({ Name: `leader-${id}`, LockDelay: '0s' }),
  })
  const { ID: session } = (await res.json()) as { ID: string }
  assert.equal(await kvWrite(consul, 'test/leader', JSON.stringify({ node: id }), `?acquire=${session}`), true)
  const pair = await kvRead(consul, 'test/leader')
  assert.equal(pair?.session, session)
  return { session, term: pair.lockIndex }
}

async function releaseLeader(consul: ConsulEmulator, lock: Lock): Promise<void> {
  const pair = await kvRead(consul, 'test/leader')
  assert.equal(await kvWrite(consul, 'test/leader', pair?.value ?? '', `?release=${lock.session}`), true)
}

/** Acquires and releases the lock until an acquire by `id` reaches LockIndex `term`. */
async function leaderAtTerm(consul: ConsulEmulator, id: string, term: number): Promise<Lock> {
  for (;;) {
    const lock = await acquireLeader(consul, id)
    if (lock.term >= term) {
      assert.equal(lock.term, term)
      return lock
    }
    await releaseLeader(consul, lock)
  }
}

/** The status and ModifyIndex of every check of the `test` service, by check id. */
async function checkIndexes(consul: ConsulEmulator): Promise<Map<string, { status: string; modifyIndex: number }>> {
  const res = await fetch(`${consul.url}/v1/health/service/test`)
  const entries = (await res.json()) as { Checks: { CheckID: string; Status: string; ModifyIndex: number }[] }[]
  return new Map(
    entries.flatMap((e) => e.Checks.map((c) => [c.CheckID, { status: c.Status, modifyIndex: c.ModifyIndex }])),
  )
}

test('the leader commits the ring under its term; every node converges on it and on the healthy set', async () => {
  const consul = await emulator()
  const nodes = [node(consul, 'a'), node(consul, 'b'), node(consul, 'c')]
  const [a, b, c] = nodes as [Membership, Membership, Membership]
  const seen: number[] = []
  b.onRing((ring) => seen.push(ring.version))
  await Promise.all(nodes.map((m) => m.start()))
  await waitFor('every node to see all three healthy', () => nodes.every((m) => m.healthy().size === 3))
  assert.equal(await kvRead(consul, 'test/ring-version'), undefined, 'no node writes itself into the ring')
  assert.ok(nodes.every((m) => m.ring() === undefined))

  const lock = await acquireLeader(consul, 'a')
  assert.equal(lock.term, 1)
  const listed = nodes.map((m) => m.awaitMember())
  const ring = await a.commit(lock.term, [memberOf(a), memberOf(b), memberOf(c)], SETTINGS, termSignal())
  assert.equal(ring.version, 1)
  assert.equal(ring.term, 1)
  assert.equal(ring.replicationFactor, 2)
  assert.equal(ring.vnodes, 4)
  assert.deepEqual(
    ring.members.map((m) => m.id),
    ['a', 'b', 'c'],
  )
  for (const m of nodes) {
    assert.deepEqual(
      ring.members.find((r) => r.id === m.config.self.id),
      { ...memberOf(m), term: 1 },
      'each member is written with the term',
    )
  }
  assert.deepEqual(await kvJson(consul, 'test/ring-version'), { version: 1, term: 1 })
  assert.deepEqual(await kvJson(consul, 'test/settings'), SETTINGS)
  assert.deepEqual(await kvJson(consul, 'test/nodes/b'), { ...memberOf(b), term: 1 })
  assert.deepEqual(a.ring(), ring, "the leader's own ring is the one it committed")

  const rings = await Promise.all(listed)
  assert.ok(
    rings.every((r, i) => r.members.some((m) => m.id === nodes[i]?.config.self.id)),
    'awaitMember resolves with a ring that lists the node',
  )
  await waitFor('every node to see version 1', () => nodes.every((m) => m.ring()?.version === 1))
  for (const m of nodes) assert.deepEqual(m.ring(), ring)

  // A second change under the same term bumps the version once more.
  const next = await a.commit(lock.term, [memberOf(a), memberOf(b), memberOf(c, 'leaving')], SETTINGS, termSignal())
  assert.equal(next.version, 2)
  assert.equal(next.term, 1)
  await waitFor('every node to see version 2', () => nodes.every((m) => m.ring()?.version === 2))
  assert.equal(c.ring()?.members.find((m) => m.id === 'c')?.state, 'leaving')
  assert.deepEqual(seen, [1, 2], 'ring versions reach listeners once each, in order')

  assert.deepEqual(c.healthy().get('a'), {
    grpcAddress: `127.0.0.1:${7000 + 'a'.charCodeAt(0)}`,
    peerAddress: `127.0.0.1:${8000 + 'a'.charCodeAt(0)}`,
  })
  assert.ok(consul.tokens.includes('secret-token'), 'every call carries the ACL token')
  assert.ok(nodes.every((m) => m.consulReachable))
  assert.ok(nodes.every((m) => m.fencedRingChanges() === 0))
})

test('awaitMember waits for a commit that lists the node, and resolves at once for a listed node', async () => {
  const consul = await emulator()
  const a = node(consul, 'a')
  const b = node(consul, 'b')
  await Promise.all([a.start(), b.start()])
  const { term } = await acquireLeader(consul, 'a')
  let member: Awaited<ReturnType<Membership['awaitMember']>> | undefined
  const waiting = b.awaitMember().then((ring) => {
    member = ring
    return ring
  })

  await a.commit(term, [memberOf(a)], SETTINGS, termSignal())
  await waitFor('b to see the ring without it', () => b.ring()?.version === 1)
  assert.equal(member, undefined, 'a ring without b does not make b a member')

  const ring = await a.commit(term, [memberOf(a), memberOf(b)], SETTINGS, termSignal())
  const listed = await waiting
  assert.equal(listed.version, 2)
  assert.deepEqual(listed, ring)
  assert.equal(await b.awaitMember(), b.ring(), 'a node already listed is a member at once')
})

test('a node restarted with the same id is a member at once; the commit of its new addresses rewrites its key alone', async () => {
  const consul = await emulator()
  const a = node(consul, 'a')
  const b = node(consul, 'b')
  await Promise.all([a.start(), b.start()])
  const { term } = await acquireLeader(consul, 'a')
  await a.commit(term, [memberOf(a), memberOf(b)], SETTINGS, termSignal())
  await waitFor('b to see version 1', () => b.ring()?.version === 1)
  await b.stop()

  const again = node(consul, 'b', [], {
    self: { id: 'b', grpcAddress: '127.0.0.1:9100', peerAddress: '127.0.0.1:9101' },
  })
  await again.start()
  const ring = await again.awaitMember()
  assert.equal(ring.version, 1)
  assert.equal(ring.members.find((m) => m.id === 'b')?.grpcAddress, b.config.self.grpcAddress)
  await waitFor('a to see b at its new addresses', () => a.healthy().get('b')?.grpcAddress === '127.0.0.1:9100')
  assert.equal(a.healthy().get('b')?.peerAddress, '127.0.0.1:9101')

  const keyOfA = await kvRead(consul, 'test/nodes/a')
  const keyOfB = await kvRead(consul, 'test/nodes/b')
  const after = await a.commit(term, [memberOf(a), memberOf(again)], SETTINGS, termSignal())
  assert.equal(after.version, 2, 'the address change is a ring change')
  const record = after.members.find((m) => m.id === 'b')
  assert.deepEqual(record?.tokens, tokensOf('b'))
  assert.equal(record?.grpcAddress, '127.0.0.1:9100')
  assert.equal(record?.peerAddress, '127.0.0.1:9101')
  assert.equal(
    (await kvRead(consul, 'test/nodes/a'))?.modifyIndex,
    keyOfA?.modifyIndex,
    'an unchanged key is not written',
  )
  assert.notEqual((await kvRead(consul, 'test/nodes/b'))?.modifyIndex, keyOfB?.modifyIndex)
  await waitFor('b to see its new addresses in the ring', () => again.ring()?.version === 2)
  assert.deepEqual(again.ring(), after)
})

test("the first commit records the settings; a node configured otherwise uses the cluster's and warns once", async () => {
  const consul = await emulator()
  const linesB: LogLine[] = []
  const linesC: LogLine[] = []
  const a = node(consul, 'a')
  const b = node(consul, 'b', linesB, { expected: { replicationFactor: 1, vnodes: 8 } })
  const c = node(consul, 'c', linesC, { expected: { replicationFactor: 3, vnodes: 4 } })
  await Promise.all([a.start(), b.start(), c.start()])
  assert.equal(await kvRead(consul, 'test/settings'), undefined)
  const { term } = await acquireLeader(consul, 'a')
  const members = [memberOf(a), memberOf(b), memberOf(c)]
  await a.commit(term, members, { replicationFactor: 3, vnodes: 4 }, termSignal())
  assert.deepEqual(await kvJson(consul, 'test/settings'), { replicationFactor: 3, vnodes: 4 })
  await waitFor('b and c to see the ring', () => b.ring()?.version === 1 && c.ring()?.version === 1)
  assert.equal(b.ring()?.replicationFactor, 3)
  assert.equal(b.ring()?.vnodes, 4)
  assert.equal(warnings(linesB, /replication factor differs/), 1)
  assert.equal(warnings(linesB, /vnodes differs/), 1)
  assert.deepEqual(
    linesC.filter((l) => l.level === 'warn'),
    [],
    'a node configured as the cluster is warns of nothing',
  )

  // A later commit keeps the settings the first one recorded.
  const ring = await a.commit(term, members, { replicationFactor: 2, vnodes: 16 }, termSignal())
  assert.equal(ring.replicationFactor, 3)
  assert.equal(ring.vnodes, 4)
  assert.deepEqual(await kvJson(consul, 'test/settings'), { replicationFactor: 3, vnodes: 4 })
  await waitFor('b to see version 2', () => b.ring()?.version === 2)
  assert.equal(warnings(linesB, /replication factor differs/), 1, 'logged once, not per ring')
  assert.equal(warnings(linesB, /vnodes differs/), 1)
})

test("commit rewrites node keys changed behind the leader's back; such a change alone is no ring change", async () => {
  const consul = await emulator()
  const nodes = [node(consul, 'a'), node(consul, 'b'), node(consul, 'c')]
  const [a, b, c] = nodes as [Membership, Membership, Membership]
  await Promise.all(nodes.map((m) => m.start()))
  const { term } = await acquireLeader(consul, 'a')
  const members = [memberOf(a), memberOf(b), memberOf(c)]
  await a.commit(term, members, SETTINGS, termSignal())
  await waitFor('every node to see version 1', () => nodes.every((m) => m.ring()?.version === 1))
  const rings = nodes.map((m) => m.ring())

  // Someone else rewrites b's record and deletes c's, without bumping the version.
  const forged = { ...memberOf(b), tokens: [1, 2, 3, 4], state: 'leaving', term }
  assert.equal(await kvWrite(consul, 'test/nodes/b', JSON.stringify(forged)), true)
  await kvDelete(consul, 'test/nodes/c')
  // A request written after them: a watch answer that shows it shows the two changes too.
  await c.requestDecommission('z')
  await waitFor('every node to see the request', () => nodes.every((m) => m.meta().decommissions.includes('z')))
  nodes.forEach((m, i) => {
    assert.equal(m.ring(), rings[i], 'node keys changed without a new version change no ring')
  })
  await c.clearDecommission('z')

  const ring = await a.commit(term, members, SETTINGS, termSignal())
  assert.equal(ring.version, 2)
  assert.deepEqual(await kvJson(consul, 'test/nodes/b'), { ...memberOf(b), term }, "b's key is the leader's again")
  assert.deepEqual(await kvJson(consul, 'test/nodes/c'), { ...memberOf(c), term }, "c's key is written again")
  assert.deepEqual(
    ring.members,
    members.map((m) => ({ ...m, term })),
  )
  await waitFor('every node to see version 2', () => nodes.every((m) => m.ring()?.version === 2))
  for (const m of nodes) assert.deepEqual(m.ring(), ring)
})

test('a ring change written under an older term is fenced by every node; a commit under that term fails', async () => {
  const consul = await emulator()
  const lines: LogLine[][] = [[], [], []]
  const nodes = ['a', 'b', 'c'].map((id, i) => node(consul, id, lines[i]))
  const [a, b, c] = nodes as [Membership, Membership, Membership]
  await Promise.all(nodes.map((m) => m.start()))
  const lock = await leaderAtTerm(consul, 'a', 2)
  const members = [memberOf(a), memberOf(b), memberOf(c)]
  const ring = await a.commit(lock.term, members, SETTINGS, termSignal())
  assert.equal(ring.term, 2)
  await waitFor('every node to see version 1 and term 2', () =>
    nodes.every((m) => m.ring()?.version === 1 && m.meta().leader?.term === 2),
  )
  const rings = nodes.map((m) => m.ring())

  // The leader of term 1, deposed but not knowing it, writes its change: a node key, then the version.
  assert.equal(
    await kvWrite(consul, 'test/nodes/c', JSON.stringify({ ...memberOf(c), state: 'leaving', term: 1 })),
    true,
  )
  assert.equal(await kvWrite(consul, 'test/ring-version', JSON.stringify({ version: 5, term: 1 })), true)
  await waitFor('every node to fence the change', () => nodes.every((m) => m.fencedRingChanges() === 1))
  nodes.forEach((m, i) => {
    assert.equal(m.ring(), rings[i], 'the ring stays')
    assert.equal(m.ring()?.version, 1)
    assert.equal(warnings(lines[i] ?? [], /older leader term/), 1, 'the rejection is logged, once')
  })
  await assert.rejects(a.commit(1, members, SETTINGS, termSignal()), UnavailableError)
  await assert.rejects(b.commit(1, members, SETTINGS, termSignal()), UnavailableError)
  assert.equal((await kvRead(consul, 'test/ring-version'))?.value, JSON.stringify({ version: 5, term: 1 }))

  // The term-2 leader's next commit writes over what the deposed one wrote, above its version.
  const next = await a.commit(lock.term, members, SETTINGS, termSignal())
  assert.equal(next.version, 6)
  assert.equal(next.term, 2)
  assert.deepEqual(
    next.members.find((m) => m.id === 'c'),
    { ...memberOf(c), term: 2 },
  )
  await waitFor('every node to take version 6', () => nodes.every((m) => m.ring()?.version === 6))
  assert.ok(
    nodes.every((m) => m.fencedRingChanges() === 1),
    'a change of the current term is not fenced',
  )
})

test("the lock's LockIndex alone fences a change of an older term, before the new leader commits", async () => {
  const consul = await emulator()
  const nodes = [node(consul, 'a'), node(consul, 'b')]
  const [a, b] = nodes as [Membership, Membership]
  await Promise.all(nodes.map((m) => m.start()))
  const first = await acquireLeader(consul, 'a')
  const members = [memberOf(a), memberOf(b)]
  await a.commit(first.term, members, SETTINGS, termSignal())
  await waitFor('both to see version 1', () => nodes.every((m) => m.ring()?.version === 1))

  // a loses the lock to b, which has committed nothing yet; then a's late change arrives.
  await releaseLeader(consul, first)
  const second = await acquireLeader(consul, 'b')
  assert.equal(second.term, 2)
  await waitFor('both to see term 2 begin', () => nodes.every((m) => m.meta().leader?.term === 2))
  assert.equal(await kvWrite(consul, 'test/ring-version', JSON.stringify({ version: 2, term: 1 })), true)
  await waitFor('both to fence the change', () => nodes.every((m) => m.fencedRingChanges() === 1))
  assert.ok(nodes.every((m) => m.ring()?.version === 1))
  await assert.rejects(a.commit(first.term, members, SETTINGS, termSignal()), UnavailableError)

  const ring = await b.commit(second.term, members, SETTINGS, termSignal())
  assert.equal(ring.version, 3)
  assert.equal(ring.term, 2)
  await waitFor('both to take version 3', () => nodes.every((m) => m.ring()?.version === 3))
})

test('a bare decimal ring version reads as term 0; after a commit under term 3 a lower term is fenced', async () => {
  const consul = await emulator()
  const a = node(consul, 'a')
  const b = node(consul, 'b')
  await Promise.all([a.start(), b.start()])
  // A ring as nodes wrote it before leaders and terms.
  await kvWrite(consul, 'test/settings', JSON.stringify(SETTINGS))
  await kvWrite(consul, 'test/nodes/a', JSON.stringify(memberOf(a)))
  await kvWrite(consul, 'test/ring-version', '7')
  await waitFor('both to read the old ring', () => a.ring()?.version === 7 && b.ring()?.version === 7)
  assert.equal(b.ring()?.term, 0)
  assert.equal(b.ring()?.members[0]?.term, undefined)

  // No lock is held: the term seen is the term of the accepted ring.
  const ring = await a.commit(3, [memberOf(a), memberOf(b)], SETTINGS, termSignal())
  assert.equal(ring.version, 8)
  assert.equal(ring.term, 3)
  await waitFor('b to take version 8', () => b.ring()?.version === 8)

  await kvWrite(consul, 'test/ring-version', '9')
  await waitFor('both to fence the term-0 version', () => a.fencedRingChanges() === 1 && b.fencedRingChanges() === 1)
  await kvWrite(consul, 'test/ring-version', JSON.stringify({ version: 10, term: 2 }))
  await waitFor('both to fence the term-2 version', () => a.fencedRingChanges() === 2 && b.fencedRingChanges() === 2)
  assert.equal(a.ring()?.version, 8)
  assert.equal(b.ring()?.version, 8)
  await assert.rejects(b.commit(2, [memberOf(a), memberOf(b)], SETTINGS, termSignal()), UnavailableError)
})

test('meta follows the leader lock, decommission requests and the move; onMeta listeners fire', async () => {
  const consul = await emulator()
  const a = node(consul, 'a')
  const b = node(consul, 'b')
  const metas: ClusterMeta[] = []
  b.onMeta((meta) => metas.push(meta))
  await Promise.all([a.start(), b.start()])
  const none: ClusterMeta = { leader: undefined, decommissions: [], move: undefined }
  assert.deepEqual(b.meta(), none)
  // None of this needs a ring: no commit is made in this test.
  const both = (what: string, probe: (meta: ClusterMeta) => boolean) =>
    waitFor(what, () => probe(a.meta()) && probe(b.meta()))

  const first = await acquireLeader(consul, 'a')
  await both('a to lead term 1', (m) => m.leader?.id === 'a')
  assert.deepEqual(b.meta().leader, { id: 'a', term: first.term })
  assert.equal(first.term, 1)

  await b.requestDecommission('c')
  await both('the request for c', (m) => m.decommissions.length === 1)
  await a.requestDecommission('b')
  await both('the requests for b and c', (m) => m.decommissions.length === 2)
  assert.deepEqual(b.meta().decommissions, ['b', 'c'], 'sorted')
  assert.ok(await kvRead(consul, 'test/decommission/b'))
  await a.clearDecommission('c')
  await both('the request for c to go', (m) => m.decommissions.length === 1)
  assert.deepEqual(a.meta().decommissions, ['b'])
  await b.clearDecommission('b')
  await both('no requests', (m) => m.decommissions.length === 0)

  const progress: MoveProgress = {
    version: 3,
    nodes: ['c'],
    phase: 'streaming',
    rangesTotal: 8,
    rangesDone: 2,
    pointsMoved: 1234,
  }
  await a.recordMove(progress)
  await both('the move', (m) => m.move !== undefined)
  assert.deepEqual(b.meta().move, progress)
  await a.recordMove({ ...progress, phase: 'switching', rangesDone: 8 })
  await both('the move to switch', (m) => m.move?.phase === 'switching')
  assert.equal(b.meta().move?.rangesDone, 8)
  await a.recordMove(undefined)
  await both('the move to end', (m) => m.move === undefined)

  await releaseLeader(consul, first)
  await both('no leader once the lock is released', (m) => m.leader === undefined)
  const second = await acquireLeader(consul, 'b')
  assert.equal(second.term, 2)
  await both('b to lead term 2', (m) => m.leader?.id === 'b')
  assert.deepEqual(a.meta().leader, { id: 'b', term: 2 })
  // Ending the session (as its TTL running out would) releases the lock too.
  await fetch(`${consul.url}/v1/session/destroy/${second.session}`, { method: 'PUT' })
  await both('no leader once its session ends', (m) => m.leader === undefined)

  const a1 = { id: 'a', term: 1 }
  const move = (phase: string, rangesDone: number) => ({ ...progress, phase, rangesDone })
  assert.deepEqual(metas, [
    { leader: a1, decommissions: [], move: undefined },
    { leader: a1, decommissions: ['c'], move: undefined },
    { leader: a1, decommissions: ['b', 'c'], move: undefined },
    { leader: a1, decommissions: ['b'], move: undefined },
    { leader: a1, decommissions: [], move: undefined },
    { leader: a1, decommissions: [], move: move('streaming', 2) },
    { leader: a1, decommissions: [], move: move('switching', 8) },
    { leader: a1, decommissions: [], move: undefined },
    none,
    { leader: { id: 'b', term: 2 }, decommissions: [], move: undefined },
    none,
  ])
})

test('a stopped node leaves the healthy set at once; its key stays until a commit removes it', async () => {
  const consul = await emulator()
  const nodes = [node(consul, 'a'), node(consul, 'b'), node(consul, 'c')]
  const [a, b, c] = nodes as [Membership, Membership, Membership]
  await Promise.all(nodes.map((m) => m.start()))
  const { term } = await acquireLeader(consul, 'a')
  await a.commit(term, [memberOf(a), memberOf(b), memberOf(c)], SETTINGS, termSignal())
  await waitFor('all healthy and on one ring', () =>
    nodes.every((m) => m.healthy().size === 3 && m.ring()?.version === 1),
  )
  const healthySets: string[][] = []
  a.onHealthy((h) => healthySets.push([...h.keys()]))
  await c.stop()
  await waitFor('c to leave the healthy set', () => !a.healthy().has('c'), 2000)
  assert.deepEqual(healthySets.at(-1), ['a', 'b'])
  assert.equal(a.ring()?.members.length, 3, 'health changes routing only, never placement')
  assert.ok(await kvRead(consul, 'test/nodes/c'))

  const ring = await a.commit(term, [memberOf(a), memberOf(b)], SETTINGS, termSignal())
  assert.equal(ring.version, 2)
  assert.deepEqual(
    ring.members.map((m) => m.id),
    ['a', 'b'],
  )
  assert.equal(await kvRead(consul, 'test/nodes/c'), undefined, "the removed member's key is deleted")
  await waitFor('b to see c removed', () => b.ring()?.version === 2)
  assert.deepEqual(
    b.ring()?.members.map((m) => m.id),
    ['a', 'b'],
  )
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
  const probeA = probeClient(consul)
  const probeB = probeClient(consul)
  const a = node(consul, 'a', lines, {}, probeA)
  const b = node(consul, 'b', [], {}, probeB)
  await Promise.all([a.start(), b.start()])
  const { term } = await acquireLeader(consul, 'a')
  await a.commit(term, [memberOf(a), memberOf(b)], SETTINGS, termSignal())
  await waitFor('both healthy and on one ring', () => a.healthy().size === 2 && b.ring()?.version === 1)
  const ring = a.ring()
  const healthy = a.healthy()
  const checks = await checkIndexes(consul)
  const states: boolean[] = []
  a.onConsulState((s) => states.push(s.reachable))
  let healthChanges = 0
  a.onHealthy(() => healthChanges++)

  consul.pause()
  await waitFor('a to notice the outage', () => !a.consulReachable, 5000)
  await waitFor(
    'several renewals and watch retries of a to fail',
    () =>
      probeA.failures('passCheck') >= 3 && probeA.failures('kvList') >= 2 && probeA.failures('passingInstances') >= 2,
    20_000,
  )
  assert.equal(a.ring(), ring, 'the last known ring stays')
  assert.equal(a.healthy(), healthy, 'the last known healthy set stays')
  assert.equal(lines.filter((l) => /unreachable/.test(l.msg)).length, 1, 'logged once per outage, not per retry')
  assert.equal(a.consulState().outages, 1)
  assert.ok(a.consulState().lastError)

  const renewedA = probeA.succeeded('passCheck')
  const renewedB = probeB.succeeded('passCheck')
  consul.resume()
  await waitFor('a to see Consul again', () => a.consulReachable, 15_000)
  assert.deepEqual(states, [false, true])
  assert.ok(lines.some((l) => /reachable again/.test(l.msg)))
  await waitFor(
    'both to renew their checks again',
    () => probeA.succeeded('passCheck') > renewedA && probeB.succeeded('passCheck') > renewedB,
    15_000,
  )
  // Consul's clock stood still too: a check that had gone critical would have a new ModifyIndex.
  assert.deepEqual(await checkIndexes(consul), checks, 'nobody was marked down by the pause')
  assert.equal(healthChanges, 0)
  assert.equal(a.healthy().size, 2)
  assert.equal(a.ring(), ring)
})

test('when Consul restarts empty, nodes register again and keep the last ring; a commit writes it back', async () => {
  const first = await emulator()
  const lines: LogLine[] = []
  const a = node(first, 'a', lines)
  const b = node(first, 'b')
  await Promise.all([a.start(), b.start()])
  const { term } = await acquireLeader(first, 'a')
  await a.commit(term, [memberOf(a), memberOf(b)], SETTINGS, termSignal())
  await waitFor('both healthy and on one ring', () => a.healthy().size === 2 && b.ring()?.version === 1)
  const ring = a.ring()
  assert.equal(a.healthKnown(), true)

  await first.close()
  await waitFor('a to notice the outage', () => !a.consulReachable, 5000)
  // The healthy set a keeps is the first Consul's: not current, so the leader does not act on it.
  await waitFor('a to know its healthy set is not current', () => !a.healthKnown(), 15_000)
  assert.equal(a.healthy().size, 2)
  const second = await emulator(first.port)
  await waitFor('a to see Consul again', () => a.consulReachable, 15_000)
  await waitFor('a to hear the new Consul on health', () => a.healthKnown(), 15_000)
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
  await waitFor('a to see that the ring is gone from Consul', () => lines.some((l) => /ring is missing/.test(l.msg)))
  assert.equal(a.ring(), ring, 'the ring Consul lost is kept')

  // The lock went with the old Consul; a leader of a new term writes the ring back, above the old version.
  const lock = await acquireLeader(second, 'a')
  const again = await a.commit(lock.term, [memberOf(a), memberOf(b)], SETTINGS, termSignal())
  assert.equal(again.version, 2, 'the version never goes back')
  await waitFor('b to take the ring written back', () => b.ring()?.version === 2)
})

test('options are validated; after stop, awaitMember and commit fail as unavailable', async () => {
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
  assert.equal(m.config.token, undefined)
  assert.throws(() => new Membership({ ...base, consulUrl: 'ftp://x' }), ValidationError)
  assert.throws(() => new Membership({ ...base, consulUrl: 'http://x:8500/path' }), ValidationError)
  assert.throws(() => new Membership({ ...base, clusterName: 'a/b' }), ValidationError)
  assert.throws(() => new Membership({ ...base, self: { ...base.self, grpcAddress: 'nohost' } }), ValidationError)
  assert.throws(() => new Membership({ ...base, self: { ...base.self, peerAddress: 'h:70000' } }), ValidationError)
  assert.throws(() => new Membership({ ...base, self: { ...base.self, id: 'a b' } }), ValidationError)
  assert.throws(() => new Membership({ ...base, ttlMs: 0 }), ValidationError)
  assert.throws(() => new Membership({ ...base, watchWaitMs: 11 * 60_000 }), ValidationError)
  assert.equal(
    new Membership({ ...base, self: { ...base.self, grpcAddress: '[::1]:5000' } }).config.self.grpcAddress,
    '[::1]:5000',
  )
  await m.stop()
  await assert.rejects(m.awaitMember(), UnavailableError)
  await assert.rejects(m.commit(1, [], SETTINGS, termSignal()), UnavailableError)

  // A node waiting to be listed when it stops is told so.
  const consul = await emulator()
  const waiting = node(consul, 'w')
  await waiting.start()
  const listed = assert.rejects(waiting.awaitMember(), UnavailableError)
  await waiting.stop()
  await listed
})

test('a leader whose term has ended commits nothing, though its watch has not yet seen the new term', async () => {
  const consul = await emulator()
  const probe = probeClient(consul)
  const a = node(consul, 'a', [], {}, probe)
  const b = node(consul, 'b')
  await Promise.all([a.start(), b.start()])
  const first = await acquireLeader(consul, 'a')
  await a.commit(first.term, [memberOf(a)], SETTINGS, termSignal())
  await waitFor('b to see version 1', () => b.ring()?.version === 1)

  // a's ring watch falls behind; meanwhile a loses the lock and b takes it.
  const release = probe.holdWatch()
  await releaseLeader(consul, first)
  const second = await acquireLeader(consul, 'b')
  assert.equal(second.term, 2)
  await waitFor('b to see term 2', () => b.meta().leader?.term === 2)

  await assert.rejects(
    a.commit(first.term, [memberOf(a), memberOf(b)], SETTINGS, termSignal()),
    UnavailableError,
    'the commit snapshot shows LockIndex 2 > term 1',
  )
  assert.equal(await kvRead(consul, 'test/nodes/b'), undefined, 'the deposed leader wrote no node key')
  release()
})

test('commit replaces a node key that holds an invalid record', async () => {
  const consul = await emulator()
  const a = node(consul, 'a')
  const b = node(consul, 'b')
  await Promise.all([a.start(), b.start()])
  const { term } = await acquireLeader(consul, 'a')
  const members = [memberOf(a), memberOf(b)]
  await a.commit(term, members, SETTINGS, termSignal())
  await kvWrite(consul, 'test/nodes/b', '{"id":"b"}')

  const end = new AbortController()
  let settled = false
  const committing = a.commit(term, members, SETTINGS, end.signal).finally(() => {
    settled = true
  })
  try {
    await waitFor('the commit to finish', () => settled, 5000)
  } finally {
    end.abort()
    await committing.catch(() => undefined)
  }
  const ring = await committing
  assert.equal(ring.version, 2)
  assert.deepEqual(await kvJson(consul, 'test/nodes/b'), { ...memberOf(b), term })
})

// ---- the ring a node keeps in its data folder, taken back when Consul lost its own ----

test('RingFile keeps the last ring saved, whole, and refuses a file that holds no ring', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'v3-ring-file-'))
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  const file = new RingFile(join(dir, 'ring.json'), recordingLogger([]))
  assert.equal(await file.load(), undefined, 'no file yet')
  const ring = (version: number): RingState => ({
    version,
    term: 2,
    replicationFactor: 2,
    vnodes: 4,
    members: [{ id: 'a', grpcAddress: '127.0.0.1:1', peerAddress: '127.0.0.1:2', tokens: [1, 2], state: 'active' }],
  })
  for (let v = 1; v <= 20; v++) file.save(ring(v))
  await file.flushed()
  assert.deepEqual(await file.load(), ring(20))
  await writeFile(join(dir, 'ring.json'), '{"version":3}')
  await assert.rejects(file.load(), /does not hold a ring/)
})

/**
 * Three nodes registered in a Consul that holds no ring, each with a peer transport whose answers
 * carry the version `known(id)` gives, and the ring `a` kept (version 7, term 5, all three members).
 */
async function keptRingCluster(known: (id: string) => number) {
  const consul = await emulator()
  const ids = ['a', 'b', 'c']
  const transports = new Map<string, ZmqPeerTransport>()
  const members = new Map<string, Membership>()
  for (const id of ids) {
    const transport = new ZmqPeerTransport({ nodeId: id, listen: '127.0.0.1:0', ringVersion: () => known(id) })
    cleanups.push(() => transport.close())
    const peerAddress = await transport.listen(async () => new Uint8Array(0))
    transports.set(id, transport)
    members.set(
      id,
      node(consul, id, [], {
        self: { id, grpcAddress: `127.0.0.1:${7000 + id.charCodeAt(0)}`, peerAddress },
        formerMember: true,
      }),
    )
  }
  const kept: RingState = {
    version: 7,
    term: 5,
    replicationFactor: 2,
    vnodes: 4,
    members: ids.map((id) => ({ ...memberOf(members.get(id)!), term: 5 })),
  }
  const lines: LogLine[] = []
  const restoreOf = (id: string, ring = kept, without?: ReadonlySet<string>) =>
    new RingRestore(
      {
        selfId: id,
        membership: members.get(id)!,
        transport: transports.get(id)!,
        kept: ring,
        ...(without === undefined ? {} : { without }),
      },
      recordingLogger(lines),
      { pollMs: 50, pingTimeoutMs: 500 },
    )
  return { consul, members, kept, lines, restoreOf, transports }
}

test('a node takes back the ring it kept once every member of it is up and none knows a newer one', async () => {
  const { members, kept, lines, restoreOf } = await keptRingCluster(() => 7)
  const a = members.get('a')!
  await Promise.all([a.start(), members.get('b')!.start()])
  await waitFor('a to hear that Consul holds no ring', () => a.consulHoldsNoRing() && a.healthy().size === 2)
  assert.equal(a.mayLead(), false, 'a former member without a ring does not lead')
  const restore = restoreOf('a')
  assert.deepEqual(await restore.attempt(), { kind: 'members-down', ids: ['c'] })
  assert.equal(a.ring(), undefined)

  restore.start()
  cleanups.push(() => restore.stop())
  await waitFor('the wait for c logged', () => lines.some((l) => /waiting for c$/.test(l.msg)))
  await members.get('c')!.start()
  await waitFor('a to take its kept ring back', () => a.ring() !== undefined)
  assert.deepEqual(a.ring(), kept)
  assert.equal(a.mayLead(), true)
  assert.ok(a.highestTerm() >= kept.term, "the kept ring's term counts as seen, so a new leader passes it")
  // Taken once: a ring known, the restore has nothing more to do.
  assert.deepEqual(await restore.attempt(), { kind: 'consul-has-ring' })
})

test('a member that knows a newer ring holds the restore back; a ring without the node is never taken back', async () => {
  const { members, kept, lines, restoreOf } = await keptRingCluster((id) => (id === 'b' ? 9 : 7))
  const a = members.get('a')!
  await Promise.all([...members.values()].map((m) => m.start()))
  await waitFor('a to see all three and no ring', () => a.consulHoldsNoRing() && a.healthy().size === 3)
  const restore = restoreOf('a')
  assert.deepEqual(await restore.attempt(), { kind: 'newer-ring', id: 'b', version: 9 })
  restore.start()
  cleanups.push(() => restore.stop())
  await waitFor('the wait logged', () => lines.some((l) => /node b knows ring version 9/.test(l.msg)))
  assert.equal(a.ring(), undefined, 'the older ring is not taken back')

  // c kept a ring that no longer lists it (it was decommissioned): it waits for the members.
  const without = { ...kept, members: kept.members.filter((m) => m.id !== 'c') }
  assert.deepEqual(await restoreOf('c', without).attempt(), { kind: 'not-a-member' })
  assert.equal(members.get('c')!.ring(), undefined)
})

test('a member that is healthy in Consul but does not answer its ping holds the restore back', async () => {
  const { members, restoreOf, transports } = await keptRingCluster(() => 7)
  const a = members.get('a')!
  await Promise.all([...members.values()].map((m) => m.start()))
  await waitFor('a to see all three and no ring', () => a.consulHoldsNoRing() && a.healthy().size === 3)
  // c's peer socket is gone (a firewall, a wrong peer key): what ring it knows cannot be told.
  await transports.get('c')!.close()
  const wait = await restoreOf('a').attempt()
  assert.equal(wait?.kind, 'no-answer')
  assert.equal(wait?.kind === 'no-answer' ? wait.id : undefined, 'c')
  assert.equal(a.ring(), undefined)
})

/** An address on loopback where nothing listens: a port taken from the system and given back. */
async function closedAddress(): Promise<string> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return `127.0.0.1:${port}`
}

test('while Consul cannot be reached, a member takes back its kept ring once every other member answers, none with a newer one', async () => {
  let bKnows = 9
  const { consul, members, kept, lines, restoreOf } = await keptRingCluster((id) => (id === 'b' ? bKnows : 7))
  consul.pause()
  const a = members.get('a')!
  const registered = a.start()
  registered.catch(() => {}) // Awaited below.
  assert.equal(a.consulUnreachedSinceStart(), false, 'not before an attempt failed')
  await waitFor('a to find Consul unreachable', () => a.consulUnreachedSinceStart(), 5000)
  assert.deepEqual(await restoreOf('a').attempt(), { kind: 'newer-ring', id: 'b', version: 9 })
  assert.equal(a.ring(), undefined, 'a member knows a newer ring: the kept one is not taken back')
  // A member that does not answer may know a newer ring: nothing is taken back while one is silent.
  const silent = {
    ...kept,
    members: [
      {
        id: 'd',
        grpcAddress: '127.0.0.1:1',
        peerAddress: await closedAddress(),
        tokens: [9999],
        state: 'active' as const,
      },
      ...kept.members,
    ],
  }
  const wait = await restoreOf('a', silent).attempt()
  assert.equal(wait?.kind === 'no-answer' ? wait.id : wait?.kind, 'd')
  assert.equal(a.ring(), undefined)

  const restore = restoreOf('a')
  restore.start()
  cleanups.push(() => restore.stop())
  await waitFor('the wait logged', () =>
    lines.some((l) => /^Consul cannot be reached: node b knows ring version 9, .*waiting for Consul$/.test(l.msg)),
  )
  assert.equal(a.ring(), undefined)
  bKnows = 7
  await waitFor('a to take its kept ring back', () => a.ring() !== undefined)
  assert.deepEqual(a.ring(), kept)
  assert.deepEqual([...a.healthy().keys()].sort(), ['a', 'b', 'c'], 'the members that answered, and itself')
  assert.ok(a.highestTerm() >= kept.term)
  assert.equal(await a.awaitMember(), a.ring(), 'a member now, before it registered')

  // Consul back: a registers, and Consul's health answer (a alone registered) replaces the set.
  consul.resume()
  await registered
  assert.equal(a.consulUnreachedSinceStart(), false)
  await waitFor('the healthy set from Consul', () => a.healthy().size === 1 && a.healthKnown())
  assert.deepEqual(a.ring(), kept, 'Consul holds no ring: the node keeps its own')
})

test('--restore-ring-without: a named member that is down is not waited for; one that is up is still asked', async () => {
  const { members, kept, restoreOf, transports, lines } = await keptRingCluster((id) => (id === 'c' ? 9 : 7))
  const a = members.get('a')!
  const c = members.get('c')!
  await Promise.all([a.start(), members.get('b')!.start(), c.start()])
  await waitFor('a to see all three and no ring', () => a.consulHoldsNoRing() && a.healthy().size === 3)
  const without = new Set(['c'])
  // c is up: it is asked, and the newer ring it knows holds the restore back.
  assert.deepEqual(await restoreOf('a', kept, without).attempt(), { kind: 'newer-ring', id: 'c', version: 9 })
  // c goes for good: without the option a waits for it; with it, a takes its ring back.
  await c.stop()
  await transports.get('c')!.close()
  await waitFor('a to see c gone', () => !a.healthy().has('c'))
  assert.deepEqual(await restoreOf('a').attempt(), { kind: 'members-down', ids: ['c'] })
  assert.equal(a.ring(), undefined)
  assert.equal(await restoreOf('a', kept, without).attempt(), undefined)
  assert.deepEqual(a.ring(), kept)
  assert.ok(lines.some((l) => /without waiting for members --restore-ring-without names/.test(l.msg)))
})

test('--restore-ring-without while Consul cannot be reached: a named member that does not answer is not waited for', async () => {
  const { consul, members, kept, restoreOf, transports } = await keptRingCluster(() => 7)
  consul.pause()
  const a = members.get('a')!
  a.start().catch(() => {}) // Waits for Consul until the node stops.
  await waitFor('a to find Consul unreachable', () => a.consulUnreachedSinceStart(), 5000)
  await transports.get('c')!.close()
  const wait = await restoreOf('a').attempt()
  assert.equal(wait?.kind === 'no-answer' ? wait.id : wait?.kind, 'c')
  assert.equal(a.ring(), undefined)
  assert.equal(await restoreOf('a', kept, new Set(['c'])).attempt(), undefined)
  assert.deepEqual(a.ring(), kept)
  assert.deepEqual([...a.healthy().keys()].sort(), ['a', 'b'], 'the members that answered, and itself')
  consul.resume()
})

test('a kept ring is not taken back while Consul holds a ring', async () => {
  const { consul, members, restoreOf } = await keptRingCluster(() => 7)
  const a = members.get('a')!
  await Promise.all([...members.values()].map((m) => m.start()))
  const { term } = await acquireLeader(consul, 'b')
  const written = [...members.values()].map((m) => memberOf(m))
  await members.get('b')!.commit(term, written, SETTINGS, termSignal())
  await waitFor('a to take the ring from Consul', () => a.ring()?.version === 1)
  assert.equal(a.consulHoldsNoRing(), false)
  assert.deepEqual(await restoreOf('a').attempt(), { kind: 'consul-has-ring' })
  assert.equal(a.ring()?.version, 1, 'the ring Consul holds stays')
})

test('a node that never was a member does not lead while Consul holds no ring and former members are registered', async () => {
  const consul = await emulator()
  const lines: LogLine[] = []
  const fresh = node(consul, 'c', lines)
  await fresh.start()
  await waitFor('c to hear Consul on health and ring', () => fresh.healthKnown() && fresh.consulHoldsNoRing())
  assert.equal(fresh.mayLead(), true, 'alone, a new node starts the ring')
  const former = node(consul, 'a', [], { formerMember: true })
  await former.start()
  const listed = (await (await fetch(`${consul.url}/v1/health/service/test?passing`)).json()) as {
    Service: { Meta: Record<string, string> }
  }[]
  assert.equal(listed.find((e) => e.Service.Meta.node_id === 'a')?.Service.Meta.former_member, 'true')
  assert.equal(listed.find((e) => e.Service.Meta.node_id === 'c')?.Service.Meta.former_member, undefined)
  await waitFor('c to see a registered', () => fresh.healthy().has('a'))
  assert.equal(fresh.mayLead(), false, 'a new ring of c alone would take the ranges of the ring a was a member of')
  assert.equal(lines.filter((l) => /nodes that were members of one are registered/.test(l.msg)).length, 1)
  await former.stop()
  await waitFor('c to see a gone', () => !fresh.healthy().has('a'))
  assert.equal(fresh.mayLead(), true)
})

/** A real LeaderElection and RingLeader for `m`, started, logging to `lines`; stopped at cleanup. */
function startLeader(m: Membership, lines: LogLine[]): void {
  const id = m.config.self.id
  const election = new LeaderElection(
    m.client,
    { clusterName: 'test', selfId: id, termFloor: () => m.highestTerm(), mayLead: () => m.mayLead() },
    { ttlMs: 3000, lockDelayMs: 1 },
    recordingLogger(lines),
  )
  const transport = new ZmqPeerTransport({ nodeId: id, listen: '127.0.0.1:0' })
  const leader = new RingLeader(
    { selfId: id, membership: m, election, transport, local: async () => new Uint8Array(0), hints: () => new Map() },
    { replicationFactor: SETTINGS.replicationFactor, vnodes: SETTINGS.vnodes, deadNodeTimeoutMs: 0 },
    recordingLogger(lines),
  )
  leader.start()
  election.start()
  cleanups.push(async () => {
    await election.stop()
    await leader.stopped()
    await transport.close()
  })
}

test('a leader does not act on what a Consul that restarted empty said on health until the new one answers', async () => {
  const first = await emulator()
  const probe = probeClient(first)
  const lines: LogLine[] = []
  const a = node(first, 'a', lines, {}, probe)
  const b = node(first, 'b')
  await Promise.all([a.start(), b.start()])
  // The ring lists a alone; b is healthy and no member (no leader runs yet to add it).
  const lock = await acquireLeader(first, 'a')
  await a.commit(lock.term, [memberOf(a)], SETTINGS, termSignal())
  await waitFor('a to see the ring and b healthy', () => a.ring()?.version === 1 && a.healthy().has('b'))
  // Consul restarts empty, and b goes away for good meanwhile: a's last healthy set still lists b.
  await first.close()
  await waitFor('a to know its healthy set is not current', () => !a.healthKnown(), 15_000)
  await b.stop()
  const release = probe.holdHealth()
  const second = await emulator(first.port)
  startLeader(a, lines)
  // a leads in the new Consul and writes back the ring it knows, under its term.
  await waitFor('the ring written back', async () => (await kvRead(second, 'test/ring-version')) !== undefined, 15_000)
  assert.equal(a.healthKnown(), false)
  assert.ok(a.healthy().has('b'), 'the old answer still lists b')
  // The leader looks again at least once a second (and at once after a change): two of its looks
  // must not add b, which only the old Consul's answer shows healthy.
  await new Promise((resolve) => setTimeout(resolve, 2100))
  assert.equal(await kvRead(second, 'test/nodes/b'), undefined, 'b was added from an answer of the old Consul')
  release()
  await waitFor('a to hear the new Consul on health', () => a.healthKnown() && !a.healthy().has('b'), 15_000)
  assert.equal(await kvRead(second, 'test/nodes/b'), undefined)
})

test('a new node that took the lock gives it up, and starts no ring, when former members of a lost ring register', async () => {
  const consul = await emulator()
  const probe = probeClient(consul)
  const lines: LogLine[] = []
  const c = node(consul, 'c', lines, {}, probe)
  await c.start()
  // c hears nothing on health until released: it does not see itself healthy, so its leader waits.
  const release = probe.holdHealth()
  assert.equal(c.healthy().size, 0)
  startLeader(c, lines)
  // Alone, c may lead a new cluster: it takes the lock.
  await waitFor('c to hold the lock', async () => (await kvRead(consul, 'test/leader'))?.session !== undefined)
  // A former member of the ring Consul lost registers, and c then hears who is healthy.
  const a = node(consul, 'a', [], { formerMember: true })
  await a.start()
  release()
  await waitFor('c to step down', () => lines.some((l) => l.msg === 'this node steps down as the leader'))
  assert.ok(lines.some((l) => /nodes of a ring Consul lost are registered/.test(JSON.stringify(l.obj))))
  await waitFor('the lock released', async () => (await kvRead(consul, 'test/leader'))?.session === undefined)
  assert.equal(await kvRead(consul, 'test/ring-version'), undefined, 'c started no ring of its own')
  // Once the former member is gone, c may lead again, and starts the ring.
  await a.stop()
  await waitFor('the ring c starts', async () => (await kvRead(consul, 'test/ring-version')) !== undefined, 15_000)
  assert.deepEqual(
    c.ring()?.members.map((m) => m.id),
    ['c'],
  )
})
