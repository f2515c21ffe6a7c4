// Leader election against the in-process Consul emulator: one leader at a time, its term is the lock
// key's LockIndex, and a leader that stops, loses its session or goes silent is replaced with a
// greater term, within the times Consul's session semantics allow.
import assert from 'node:assert/strict'
import { afterEach, test } from 'node:test'
import {
  type Blocking,
  type ConsulClient,
  ConsulError,
  type Indexed,
  type KvPair,
  type KvWrite,
  NpmConsulClient,
  type ServiceInstance,
  type ServiceRegistration,
} from '../../src/cluster/consul-client.js'
import { type LeaderConfig, LeaderElection, type LeaderOptions, type Term } from '../../src/cluster/leader.js'
import type { Logger } from '../../src/engine/config.js'
import { UnavailableError, ValidationError } from '../../src/model/errors.js'
import { type ConsulEmulator, startConsulEmulator } from '../fixtures/consul-emulator.js'
import { waitFor } from '../fixtures/wait.js'

const OPTIONS: LeaderOptions = { ttlMs: 600, lockDelayMs: 300 }
const KEY = 'test/leader'

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

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function emulator(): Promise<ConsulEmulator> {
  const e = await startConsulEmulator({ port: 0 })
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
 * A client that counts its successful calls, can hold the answers of some calls back, and can be
 * killed: from then on every call fails as if Consul could not be reached, which is what the rest of
 * the cluster sees of a node that froze or lost its network. Calls already in flight run on.
 */
class TestClient implements ConsulClient {
  private dead = false
  private readonly held = new Map<string, Promise<void>>()
  readonly calls = new Map<string, number>()

  constructor(private readonly inner: ConsulClient) {}

  kill(): void {
    this.dead = true
  }

  count(what: string): number {
    return this.calls.get(what) ?? 0
  }

  /** Holds back the answers of the named calls, those in flight included, until the returned function runs. */
  hold(...whats: string[]): () => void {
    let release = () => {}
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    for (const what of whats) this.held.set(what, gate)
    return () => {
      for (const what of whats) this.held.delete(what)
      release()
    }
  }

  private async run<T>(what: string, call: () => Promise<T>): Promise<T> {
    if (this.dead) throw new ConsulError(`cannot ${what}: connect ECONNREFUSED`, undefined)
    const result = await call()
    await this.held.get(what)
    this.calls.set(what, this.count(what) + 1)
    return result
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
    return this.run('kvList', () => this.inner.kvList(prefix, blocking, signal))
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

function npmClient(consul: ConsulEmulator): NpmConsulClient {
  const client = new NpmConsulClient(consul.url, undefined, 1000)
  cleanups.push(() => client.close())
  return client
}

interface Candidate {
  readonly id: string
  readonly election: LeaderElection
  readonly client: TestClient
  readonly lines: LogLine[]
  /** Every term this candidate was elected to, with when (performance.now()). */
  readonly elected: { term: Term; at: number }[]
}

function candidate(
  consul: ConsulEmulator,
  id: string,
  options: LeaderOptions = OPTIONS,
  more: Pick<LeaderConfig, 'termFloor' | 'mayLead'> = {},
): Candidate {
  const client = new TestClient(npmClient(consul))
  const lines: LogLine[] = []
  const config = { clusterName: 'test', selfId: id, ...more }
  const election = new LeaderElection(client, config, options, recordingLogger(lines))
  const elected: { term: Term; at: number }[] = []
  election.onElected((term) => elected.push({ term, at: performance.now() }))
  cleanups.push(() => election.stop())
  return { id, election, client, lines, elected }
}

function leaders(candidates: readonly Candidate[]): Candidate[] {
  return candidates.filter((c) => c.election.current() !== undefined)
}

/** The one leader among `candidates`, waiting until there is one and failing if there are several. */
async function theLeader(candidates: readonly Candidate[], what = 'a leader'): Promise<Candidate> {
  const found = await waitFor(what, () => {
    const now = leaders(candidates)
    return now.length > 0 && now
  })
  assert.equal(found.length, 1, `one leader at a time, not ${found.map((c) => c.id).join(', ')}`)
  return found[0] as Candidate
}

/** The leader key as Consul's HTTP API shows it, read without the client under test. */
async function rawKey(consul: ConsulEmulator): Promise<{ session?: string; lockIndex: number; value: string }> {
  const res = await fetch(`${consul.url}/v1/kv/${KEY}`)
  assert.equal(res.status, 200)
  const [entry] = (await res.json()) as { Session?: string; LockIndex: number; Value: string | null }[]
  assert.ok(entry)
  return {
    ...(entry.Session !== undefined ? { session: entry.Session } : {}),
    lockIndex: entry.LockIndex,
    value: Buffer.from(entry.Value ?? '', 'base64').toString(),
  }
}

test('exactly one of three candidates leads, its term is the LockIndex, and it keeps leading', async () => {
  const consul = await emulator()
  const all = ['a', 'b', 'c'].map((id) => candidate(consul, id))
  for (const c of all) c.election.start()
  const leader = await theLeader(all)
  const term = leader.election.current()
  assert.ok(term)
  assert.equal(term.signal.aborted, false)
  assert.equal(leader.elected.length, 1)
  assert.equal(leader.elected[0]?.term, term, 'onElected hands out the term current() returns')

  const key = await rawKey(consul)
  assert.equal(term.term, key.lockIndex)
  assert.equal(term.term, 1, 'the first acquire of a new key')
  assert.ok(key.session)
  assert.deepEqual(JSON.parse(key.value), { node: leader.id })
  assert.equal(await leader.election.stillLeads(term), true)

  // Past the TTL the leader holds on through its renewals, and nobody else was elected meanwhile.
  const renewed = leader.client.count('renewSession')
  await waitFor('the leader to renew its session for longer than its TTL', () => {
    return leader.client.count('renewSession') >= renewed + 4
  })
  assert.deepEqual(
    leaders(all).map((c) => c.id),
    [leader.id],
  )
  assert.deepEqual(
    all.map((c) => c.elected.length),
    all.map((c) => (c === leader ? 1 : 0)),
  )
  assert.equal(term.signal.aborted, false)
  assert.equal((await rawKey(consul)).session, key.session)
  assert.ok(leader.lines.some((l) => l.level === 'info' && l.msg === 'this node leads the cluster'))
})

test('a leader that stops releases the key: another leads at once, with a greater term', async (t) => {
  const consul = await emulator()
  const all = ['a', 'b', 'c'].map((id) => candidate(consul, id))
  for (const c of all) c.election.start()
  const old = await theLeader(all)
  const oldTerm = old.election.current()
  assert.ok(oldTerm)
  const others = all.filter((c) => c !== old)
  // Both others wait on the key with a blocking query by now.
  await waitFor('the others to watch the key', () => others.every((c) => c.client.count('kvList') >= 1))

  const stoppedAt = performance.now()
  await old.election.stop()
  assert.equal(oldTerm.signal.aborted, true, 'stop ends the term before it releases the key')
  assert.ok(oldTerm.signal.reason instanceof UnavailableError)
  assert.equal(old.election.current(), undefined)
  assert.equal(await old.election.stillLeads(oldTerm), false)

  const next = await theLeader(others, 'another leader')
  const elected = next.elected.at(-1)
  assert.ok(elected)
  assert.ok(elected.term.term > oldTerm.term, `term ${elected.term.term} follows ${oldTerm.term}`)
  const handover = elected.at - stoppedAt
  t.diagnostic(`handover after stop: ${handover.toFixed(0)} ms`)
  assert.ok(handover < OPTIONS.lockDelayMs, `a release leaves no lock-delay: took ${handover.toFixed(0)} ms`)
  assert.equal((await rawKey(consul)).lockIndex, elected.term.term)
  assert.equal(await next.election.stillLeads(elected.term), true)
})

test('a lock that starts below the terms a node has seen (Consul lost its data) is taken again until it passes them', async () => {
  // A Consul restarted without its data creates the key anew, at LockIndex 1, while the nodes have
  // seen term 5: a leader at term 1 would have every ring change fenced as an older leader's.
  const consul = await emulator()
  const floors = new Map([
    ['a', 5],
    ['b', 3],
  ])
  // As a node's membership does, each candidate's floor also counts every LockIndex its client read,
  // those of its own acquires included.
  const all = ['a', 'b'].map((id) => {
    const c = candidate(consul, id, OPTIONS, { termFloor: () => floors.get(id) ?? 0 })
    const kvGet = c.client.kvGet.bind(c.client)
    c.client.kvGet = async (key, signal) => {
      const pair = await kvGet(key, signal)
      if (pair !== undefined) floors.set(id, Math.max(floors.get(id) ?? 0, pair.lockIndex))
      return pair
    }
    return c
  })
  for (const c of all) c.election.start()
  const leader = await theLeader(all)
  const term = leader.election.current()
  assert.ok(term)
  // Above 5 or 3, whoever won; not far above: each acquire bumps the index by one.
  assert.ok(term.term > (leader.id === 'a' ? 5 : 3), `term ${term.term} passes the floor of ${leader.id}`)
  assert.ok(term.term <= 7, `term ${term.term}: the lock was taken again no more often than needed`)
  const key = await rawKey(consul)
  assert.equal(key.lockIndex, term.term)
  assert.equal(key.session !== undefined, true)
  assert.deepEqual(JSON.parse(key.value), { node: leader.id })
  assert.equal(await leader.election.stillLeads(term), true)
  assert.ok(leader.lines.some((l) => l.level === 'warn' && /lock starts below the terms/.test(l.msg)))
  assert.equal(leaders(all).length, 1)

  // Stopped, it hands over to the other, whose term is above both floors and the last term.
  await leader.election.stop()
  const other = all.find((c) => c !== leader) as Candidate
  const next = await theLeader([other], 'the other leader')
  const nextTerm = next.election.current()
  assert.ok(nextTerm)
  assert.ok(nextTerm.term > term.term)
  assert.equal((await rawKey(consul)).lockIndex, nextTerm.term)
})

test('a candidate that may not lead (a member that knows no ring) does not try for the lock until it may', async () => {
  const consul = await emulator()
  let allowed = false
  const waiting = candidate(consul, 'a', OPTIONS, { mayLead: () => allowed })
  const other = candidate(consul, 'b')
  for (const c of [waiting, other]) c.election.start()
  assert.equal((await theLeader([waiting, other])).id, 'b')
  await other.election.stop()
  // The key is free, and the waiting candidate has its session: it asks to be allowed, not Consul.
  await waitFor('the key free', async () => ((await rawKey(consul)).session === undefined ? true : undefined))
  await waitFor('its session', () => waiting.client.count('createSession') >= 1)
  assert.equal(waiting.client.count('kvPut'), 0, 'no acquire while it may not lead')
  assert.equal(waiting.election.current(), undefined)
  allowed = true
  const leader = await theLeader([waiting], 'the candidate once allowed')
  assert.equal(leader.id, 'a')
})

test('a leader that resigns ends its term and releases the key, and campaigns again once it may lead', async () => {
  const consul = await emulator()
  let allowed = true
  let asked = 0
  const a = candidate(consul, 'a', OPTIONS, {
    mayLead: () => {
      asked++
      return allowed
    },
  })
  a.election.start()
  await theLeader([a])
  const term = a.election.current()!
  allowed = false
  a.election.resign(term, 'a test')
  assert.equal(term.signal.aborted, true, 'the term ends at once')
  assert.equal(a.election.current(), undefined)
  await waitFor('the key released', async () => ((await rawKey(consul)).session === undefined ? true : undefined))
  await waitFor('a new session', () => a.client.count('createSession') >= 2)
  const puts = a.client.count('kvPut')
  const askedBefore = asked
  await waitFor('the new candidacy to ask twice whether it may lead', () => asked >= askedBefore + 2)
  assert.equal(a.client.count('kvPut'), puts, 'no acquire while it may not lead')
  assert.equal(a.election.current(), undefined)
  assert.ok(a.lines.some((l) => l.level === 'warn' && /steps down/.test(l.msg)))
  allowed = true
  await theLeader([a], 'a again, once it may lead')
  assert.ok(a.election.current()!.term > term.term)
})

test('a leader whose session is destroyed loses its term at once; another leads after the lock-delay', async (t) => {
  const consul = await emulator()
  const all = ['a', 'b', 'c'].map((id) => candidate(consul, id))
  for (const c of all) c.election.start()
  const old = await theLeader(all)
  const oldTerm = old.election.current()
  assert.ok(oldTerm)
  const others = all.filter((c) => c !== old)
  await waitFor('the others to watch the key', () => others.every((c) => c.client.count('kvList') >= 1))
  const { session } = await rawKey(consul)
  assert.ok(session)

  let lostAt = 0
  let oldStopped: Promise<void> | undefined
  oldTerm.signal.addEventListener('abort', () => {
    lostAt = performance.now()
    // The old leader campaigns again with a new session, and may win once the lock-delay is over;
    // stopping it makes the takeover by another node certain.
    oldStopped = old.election.stop()
  })
  const destroyedAt = performance.now()
  const res = await fetch(`${consul.url}/v1/session/destroy/${session}`, { method: 'PUT' })
  assert.equal(res.status, 200)

  await waitFor('the old leader to see its loss', () => oldTerm.signal.aborted, 2000)
  assert.ok(oldTerm.signal.reason instanceof UnavailableError)
  assert.equal(oldTerm.signal.reason.message, 'this node lost the leadership')
  assert.ok(
    lostAt - destroyedAt < OPTIONS.lockDelayMs,
    `the watch sees the loss within the lock-delay: took ${(lostAt - destroyedAt).toFixed(0)} ms`,
  )
  assert.equal(await old.election.stillLeads(oldTerm), false)
  assert.ok(old.lines.some((l) => l.level === 'warn' && l.msg === 'this node lost the leadership'))

  const next = await theLeader(others, 'another leader')
  const elected = next.elected.at(-1)
  assert.ok(elected)
  assert.ok(elected.term.term > oldTerm.term, `term ${elected.term.term} follows ${oldTerm.term}`)
  const takeover = elected.at - destroyedAt
  t.diagnostic(`loss seen after ${(lostAt - destroyedAt).toFixed(0)} ms, takeover after ${takeover.toFixed(0)} ms`)
  assert.ok(takeover >= OPTIONS.lockDelayMs, `nobody leads during the lock-delay: took ${takeover.toFixed(0)} ms`)
  assert.ok(
    takeover < OPTIONS.lockDelayMs + 500,
    `the lock-delay's end is not overslept: took ${takeover.toFixed(0)} ms`,
  )
  assert.equal((await rawKey(consul)).lockIndex, elected.term.term)
  await oldStopped
})

test('a leader that can no longer reach Consul gives up at its TTL, before another leads within ttl + lock-delay', async (t) => {
  const consul = await emulator()
  // The doomed node leads first, so that it is the one that goes silent.
  const doomed = candidate(consul, 'a')
  doomed.election.start()
  const oldTerm = (await theLeader([doomed])).election.current()
  assert.ok(oldTerm)
  const others = ['b', 'c'].map((id) => candidate(consul, id))
  for (const c of others) c.election.start()
  await waitFor('the others to watch the key', () => others.every((c) => c.client.count('kvList') >= 1))

  let lostAt = 0
  oldTerm.signal.addEventListener('abort', () => {
    lostAt = performance.now()
  })
  const killedAt = performance.now()
  doomed.client.kill()

  const next = await theLeader(others, 'another leader')
  const elected = next.elected.at(-1)
  assert.ok(elected)
  assert.ok(oldTerm.signal.aborted, 'the silent leader gave up its term')
  assert.ok(lostAt <= elected.at, 'the old term ended before the new one began')
  assert.ok(
    lostAt - killedAt <= OPTIONS.ttlMs + 100,
    `the old leader gives up within its TTL: took ${(lostAt - killedAt).toFixed(0)} ms`,
  )
  const replaced = elected.at - killedAt
  t.diagnostic(`term given up after ${(lostAt - killedAt).toFixed(0)} ms, replaced after ${replaced.toFixed(0)} ms`)
  assert.ok(
    replaced <= OPTIONS.ttlMs + OPTIONS.lockDelayMs + 400,
    `replaced within ttl + lock-delay: took ${replaced.toFixed(0)} ms`,
  )
  assert.ok(elected.term.term > oldTerm.term)
  assert.equal(doomed.election.current(), undefined)
  assert.equal(await doomed.election.stillLeads(oldTerm), false)
  assert.ok(doomed.lines.some((l) => l.level === 'warn' && /cannot reach Consul/.test(l.msg)))
  assert.equal(await next.election.stillLeads(elected.term), true)
  // Every call of the dead node fails; stop still returns, and does not throw.
  await doomed.election.stop()
})

test('stillLeads reads Consul: a leader that lost the key learns it there before its watch does', async () => {
  const consul = await emulator()
  const a = candidate(consul, 'a')
  a.election.start()
  const term = (await theLeader([a])).election.current()
  assert.ok(term)
  assert.equal(await a.election.stillLeads(term), true)
  await waitFor('the leader to watch the key', () => a.client.count('kvList') >= 1)

  // The watch's answer and the renewals' are held back, so only stillLeads' read can tell.
  const release = a.client.hold('kvList', 'renewSession')
  const { session } = await rawKey(consul)
  await fetch(`${consul.url}/v1/session/destroy/${session}`, { method: 'PUT' })
  assert.equal(term.signal.aborted, false, 'nothing has told the leader yet')
  assert.equal(await a.election.stillLeads(term), false)
  assert.ok(term.signal.aborted, 'a read that shows the loss ends the term')
  assert.ok(a.lines.some((l) => l.msg === 'this node lost the leadership' && 'reason' in l.obj))
  assert.equal(a.election.current(), undefined)
  release()
  // It campaigns again with a new session and, alone, leads the next term once the lock-delay is over.
  const next = await waitFor('a to lead again', () => {
    const now = a.election.current()
    return now !== undefined && now !== term && now
  })
  assert.ok(next.term > term.term)
})

test('stop returns promptly and does not throw when Consul is gone', async () => {
  const consul = await emulator()
  const a = candidate(consul, 'a')
  a.election.start()
  const term = (await theLeader([a])).election.current()
  assert.ok(term)
  await consul.close()
  const started = performance.now()
  await a.election.stop()
  assert.ok(performance.now() - started < 1000, 'stop does not wait out retries')
  assert.ok(term.signal.aborted)
  assert.equal(a.election.current(), undefined)
  await a.election.stop()

  // Stopping an election that never started is as quiet.
  await candidate(consul, 'b').election.stop()
})

test('the options and names are checked, and start runs once', async () => {
  const consul = await emulator()
  const client = npmClient(consul)
  const make = (options: LeaderOptions, clusterName = 'test', selfId = 'a') =>
    new LeaderElection(client, { clusterName, selfId }, options, recordingLogger([]))
  assert.throws(() => make({ ttlMs: 0, lockDelayMs: 1 }), ValidationError)
  assert.throws(() => make({ ttlMs: 600, lockDelayMs: 1.5 }), ValidationError)
  assert.throws(() => make({ ttlMs: Number.NaN, lockDelayMs: 1 }), ValidationError)
  assert.throws(() => make(OPTIONS, 'a/b'), ValidationError)
  assert.throws(() => make(OPTIONS, 'test', 'x y'), ValidationError)
  const e = make(OPTIONS)
  cleanups.push(() => e.stop())
  e.start()
  assert.throws(() => e.start(), /BUG/)
})

test('the client reads LockIndex and Session, gets one key, and deletes with cas', async () => {
  const consul = await emulator()
  const client = npmClient(consul)
  assert.equal(await client.kvGet('test/x'), undefined)
  assert.equal(await client.kvPut('test/x', 'one', {}), true)
  const plain = await client.kvGet('test/x')
  assert.deepEqual(plain && { ...plain, modifyIndex: 0 }, { key: 'test/x', value: 'one', modifyIndex: 0, lockIndex: 0 })

  const session = await client.createSession({ name: 'test', ttlMs: 5000, lockDelayMs: 0 })
  assert.equal(await client.kvPut('test/x', 'two', { acquire: session }), true)
  const locked = await client.kvGet('test/x')
  assert.equal(locked?.lockIndex, 1)
  assert.equal(locked?.session, session)
  assert.equal(locked?.value, 'two')
  const listed = await client.kvList('test/x', { index: 0, waitMs: 0 })
  assert.deepEqual(listed.value, [locked])

  assert.equal(await client.kvPut('test/x', 'two', { release: session }), true)
  const released = await client.kvGet('test/x')
  assert.equal(released?.session, undefined)
  assert.equal(released?.lockIndex, 1, 'a release keeps the LockIndex')
  assert.ok(released && !('session' in released), 'no session property when nobody holds the key')

  assert.equal(await client.kvDelete('test/x', { cas: released.modifyIndex + 1 }), false)
  assert.equal(await client.kvDelete('test/x', { cas: 0 }), false, 'a cas of 0 deletes nothing')
  assert.notEqual(await client.kvGet('test/x'), undefined)
  assert.equal(await client.kvDelete('test/x', { cas: released.modifyIndex }), true)
  assert.equal(await client.kvGet('test/x'), undefined)
  assert.equal(await client.kvDelete('test/x', {}), true, 'deleting a missing key succeeds')
  await client.destroySession(session)
})
