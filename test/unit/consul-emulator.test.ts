// The Consul emulator against Consul's documented semantics, driven through the `consul` npm client
// wherever it can be (so the client and the emulator are shown to agree). With CONSUL_HTTP_ADDR set,
// the same tests run against that real agent; the ones about the emulator's own internals (pause,
// the standalone process, TTLs below Consul's minimums) are skipped there.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { EventEmitter, once } from 'node:events'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import Consul from 'consul'
import { type ConsulEmulator, startConsulEmulator } from '../fixtures/consul-emulator.js'
import { waitFor } from '../fixtures/wait.js'

const REAL = process.env.CONSUL_HTTP_ADDR
const real = REAL !== undefined && REAL !== ''
const emulatorOnly = { skip: real ? 'needs the emulator' : false }

let emulator: ConsulEmulator | undefined
let base = ''

before(async () => {
  if (real) {
    base = (REAL.startsWith('http') ? REAL : `http://${REAL}`).replace(/\/$/, '')
  } else {
    emulator = await startConsulEmulator({ port: 0 })
    base = emulator.url
  }
})

after(async () => {
  await emulator?.close()
})

function client(token?: string): Consul {
  // The client's typings omit `baseUrl`, which it passes on to papi.
  const options = { baseUrl: `${base}/v1`, defaults: token ? { token } : {} }
  return new Consul(options)
}

/** A name no other test or earlier run uses, so the tests can share a real agent. */
function unique(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`
}

interface Extra {
  ctx: EventEmitter
  index?: string
  wait?: string
}

/**
 * Runs a client call with the raw response, to read X-Consul-Index. The blocking options travel in
 * `extra`, spread into the call's options, because the client's typings leave out `index` and `wait`.
 */
async function withIndex(
  blocking: { index?: number; wait?: string },
  call: (extra: Extra) => Promise<unknown>,
): Promise<{ index: number; body: unknown }> {
  const extra: Extra = { ctx: Object.assign(new EventEmitter(), { includeResponse: true }) }
  if (blocking.index !== undefined) extra.index = String(blocking.index)
  if (blocking.wait !== undefined) extra.wait = blocking.wait
  const result = await call(extra)
  assert.ok(Array.isArray(result), 'includeResponse gives [response, body]')
  const [res, body] = result as [{ headers: Record<string, string | undefined> }, unknown]
  return { index: Number(res.headers['x-consul-index']), body }
}

/**
 * Asserts that a KV write was refused. Consul answers `false`; the client resolves a false body as
 * undefined, so anything but `true` is a refusal.
 */
function refused(answer: boolean, message: string): void {
  assert.notEqual(answer, true, message)
}

interface HealthEntry {
  Service: { ID: string; Service: string; Address: string; Port: number; Meta: Record<string, string> }
  Checks: { CheckID: string; Status: string; Output: string }[]
}

async function health(consul: Consul, service: string, passing: boolean): Promise<HealthEntry[]> {
  const body: unknown = await consul.health.service({ service, passing })
  return body as HealthEntry[]
}

async function statusOf(consul: Consul, service: string, id: string): Promise<string | undefined> {
  const entries = await health(consul, service, false)
  return entries.find((e) => e.Service.ID === id)?.Checks.find((c) => c.CheckID === `service:${id}`)?.Status
}

describe('services and TTL checks', () => {
  test('register, pass, list as passing, deregister', async () => {
    const consul = client()
    const name = unique('svc')
    const id = `${name}-a`
    await consul.agent.service.register({
      name,
      id,
      address: '127.0.0.1',
      port: 5001,
      meta: { node_id: 'a', peer_address: '127.0.0.1:5002' },
      check: { name: 'ttl', ttl: '30s', deregistercriticalserviceafter: '1m', timeout: '1s' },
    })
    // A TTL check starts critical until it is first updated, so the instance is not yet passing.
    assert.equal(await statusOf(consul, name, id), 'critical')
    assert.deepEqual(await health(consul, name, true), [])

    await consul.agent.check.pass({ id: `service:${id}`, note: 'ok' })
    const passing = await health(consul, name, true)
    assert.equal(passing.length, 1)
    const entry = passing[0] as HealthEntry
    assert.equal(entry.Service.ID, id)
    assert.equal(entry.Service.Address, '127.0.0.1')
    assert.equal(entry.Service.Port, 5001)
    assert.deepEqual(entry.Service.Meta, { node_id: 'a', peer_address: '127.0.0.1:5002' })
    assert.ok(entry.Checks.some((c) => c.CheckID === 'serfHealth' && c.Status === 'passing'))

    await consul.agent.check.warn({ id: `service:${id}` })
    assert.deepEqual(await health(consul, name, true), [], 'warning is not passing')
    await consul.agent.check.fail({ id: `service:${id}` })
    assert.equal(await statusOf(consul, name, id), 'critical')

    await consul.agent.service.deregister(id)
    assert.deepEqual(await health(consul, name, false), [])
    await assert.rejects(consul.agent.service.deregister(id), (err: { statusCode?: number }) => err.statusCode === 404)
    await assert.rejects(consul.agent.check.pass(`service:${id}`), (err: { statusCode?: number }) => {
      // Consul answers 404 "Unknown check ID" (older agents: 500 "does not have associated TTL").
      return err.statusCode === 404 || err.statusCode === 500
    })
  })

  test('a TTL check that is not renewed goes critical and leaves ?passing', async () => {
    const consul = client()
    const name = unique('ttl')
    await consul.agent.service.register({ name, id: name, check: { name: 'ttl', ttl: '1s', timeout: '1s' } })
    await consul.agent.check.pass(`service:${name}`)
    assert.equal((await health(consul, name, true)).length, 1)
    const started = Date.now()
    await waitFor('the check to expire', async () => (await health(consul, name, true)).length === 0, 5000)
    assert.ok(Date.now() - started >= 900, 'not before the TTL')
    const [entry] = await health(consul, name, false)
    const check = entry?.Checks.find((c) => c.CheckID === `service:${name}`)
    assert.equal(check?.Status, 'critical')
    assert.match(check?.Output ?? '', /TTL expired/)
    await consul.agent.service.deregister(name)
  })

  test('a service critical longer than DeregisterCriticalServiceAfter is reaped', emulatorOnly, async () => {
    const consul = client()
    const name = unique('reap')
    await consul.agent.service.register({
      name,
      id: name,
      check: { name: 'ttl', ttl: '300ms', deregistercriticalserviceafter: '500ms', timeout: '1s' },
    })
    await waitFor('the service to be reaped', async () => (await health(consul, name, false)).length === 0, 5000)
    await assert.rejects(
      consul.agent.check.pass(`service:${name}`),
      (err: { statusCode?: number }) => err.statusCode === 404,
    )
  })

  test('the client sends its ACL token, and the emulator records it', emulatorOnly, async () => {
    const token = unique('token')
    await client(token).kv.set(unique('tok'), 'x')
    assert.ok(emulator?.tokens.includes(token))
  })
})

describe('blocking queries', () => {
  test('a health query blocks until its result changes, and never longer than wait', async () => {
    const consul = client()
    const name = unique('block')
    await consul.agent.service.register({ name, id: name, check: { name: 'ttl', ttl: '60s', timeout: '1s' } })
    const first = await withIndex({}, (x) => consul.health.service({ service: name, passing: true, ...x }))
    assert.ok(first.index >= 1)

    // Nothing changes: the query returns after `wait` (plus at most wait/16 of jitter), same index.
    let t = Date.now()
    const idle = await withIndex({ index: first.index, wait: '1s' }, (x) =>
      consul.health.service({ service: name, passing: true, ...x }),
    )
    let elapsed = Date.now() - t
    assert.ok(elapsed >= 950 && elapsed < 1000 + 1000 / 16 + 500, `returned after ${elapsed} ms`)
    assert.equal(idle.index, first.index)
    assert.deepEqual(idle.body, [])

    // A change wakes it early, with a larger index and the new result.
    t = Date.now()
    const woken = withIndex({ index: first.index, wait: '10s' }, (x) =>
      consul.health.service({ service: name, passing: true, ...x }),
    )
    setTimeout(() => void consul.agent.check.pass(`service:${name}`), 200)
    const changed = await woken
    elapsed = Date.now() - t
    assert.ok(elapsed >= 150 && elapsed < 3000, `returned after ${elapsed} ms`)
    assert.ok(changed.index > first.index, 'the index moves forward')
    assert.equal((changed.body as HealthEntry[]).length, 1)

    // Passing a passing check again changes nothing the query returns: it does not wake.
    t = Date.now()
    const again = withIndex({ index: changed.index, wait: '1s' }, (x) =>
      consul.health.service({ service: name, passing: true, ...x }),
    )
    setTimeout(() => void consul.agent.check.pass(`service:${name}`), 100)
    const same = await again
    assert.ok(Date.now() - t >= 950, 'an idempotent update does not wake the query')
    assert.equal(same.index, changed.index)

    // Deregistering is a change too, and the index still moves forward.
    const gone = withIndex({ index: changed.index, wait: '10s' }, (x) =>
      consul.health.service({ service: name, passing: true, ...x }),
    )
    await consul.agent.service.deregister(name)
    const last = await gone
    assert.ok(last.index > changed.index)
    assert.deepEqual(last.body, [])
  })

  test('X-Consul-Index never goes backwards, and a write elsewhere does not wake a KV query', async () => {
    const consul = client()
    const prefix = unique('mono')
    const seen: number[] = []
    for (let i = 0; i < 5; i++) {
      await consul.kv.set(`${prefix}/k${i}`, String(i))
      seen.push((await withIndex({}, (x) => consul.kv.get({ key: `${prefix}/`, recurse: true, ...x }))).index)
    }
    await consul.kv.del({ key: `${prefix}/k4` })
    seen.push((await withIndex({}, (x) => consul.kv.get({ key: `${prefix}/`, recurse: true, ...x }))).index)
    for (let i = 1; i < seen.length; i++) assert.ok((seen[i] as number) > (seen[i - 1] as number), `${seen}`)

    // A deleted key keeps its index (a tombstone), so the prefix does not go back.
    const key = `${prefix}/k0`
    const { index } = await withIndex({}, (x) => consul.kv.get({ key, ...x }))
    const t = Date.now()
    const waiting = withIndex({ index: index, wait: '1s' }, (x) => consul.kv.get({ key, ...x }))
    await consul.kv.set(unique('other'), 'x')
    const result = await waiting
    assert.ok(Date.now() - t >= 950, 'a write to another key does not wake it')
    assert.equal(result.index, index)
  })

  test('a missing key answers 404 with an index, and a blocking read wakes when it appears', async () => {
    const consul = client()
    const key = unique('missing')
    const res = await fetch(`${base}/v1/kv/${key}`)
    assert.equal(res.status, 404)
    const index = Number(res.headers.get('x-consul-index'))
    assert.ok(index >= 1)
    assert.equal(await consul.kv.get(key), undefined)
    const waiting = withIndex({ index: index, wait: '10s' }, (x) => consul.kv.get({ key, ...x }))
    await consul.kv.set(key, 'here')
    const got = await waiting
    assert.ok(got.index > index)
    assert.equal((got.body as { Value: string }).Value, 'here')
  })
})

describe('KV', () => {
  test('values round trip base64, with flags, raw, keys and recurse', async () => {
    const consul = client()
    const prefix = unique('kv')
    assert.equal(await consul.kv.set({ key: `${prefix}/a/x`, value: 'héllo', flags: 42 }), true)
    await consul.kv.set(`${prefix}/a/y`, '{"n":1}')
    await consul.kv.set(`${prefix}/b`, '')
    const got = await consul.kv.get(`${prefix}/a/x`)
    assert.equal(got?.Value, 'héllo')
    assert.equal(got?.Flags, 42)
    assert.equal(got?.LockIndex, 0)
    assert.ok((got?.CreateIndex ?? 0) > 0 && got?.CreateIndex === got?.ModifyIndex)
    const raw = await fetch(`${base}/v1/kv/${prefix}/a/y?raw`)
    assert.equal(await raw.text(), '{"n":1}')
    const empty = await consul.kv.get(`${prefix}/b`)
    assert.equal(empty?.Value, null, 'an empty value is null')
    assert.deepEqual(await consul.kv.keys(`${prefix}/`), [`${prefix}/a/x`, `${prefix}/a/y`, `${prefix}/b`])
    assert.deepEqual(await consul.kv.keys({ key: `${prefix}/`, separator: '/' }), [`${prefix}/a/`, `${prefix}/b`])
    const all: unknown = await consul.kv.get({ key: `${prefix}/a/`, recurse: true })
    assert.deepEqual(
      (all as { Key: string }[]).map((e) => e.Key),
      [`${prefix}/a/x`, `${prefix}/a/y`],
    )
    assert.equal(await consul.kv.del({ key: `${prefix}/`, recurse: true }), true)
    assert.deepEqual(await consul.kv.get({ key: `${prefix}/`, recurse: true }), undefined)
  })

  test('cas=0 creates only; a stale index fails; the current one succeeds', async () => {
    const consul = client()
    const key = unique('cas')
    assert.equal(await consul.kv.set({ key, value: '1', cas: 0 }), true)
    refused(await consul.kv.set({ key, value: '2', cas: 0 }), 'cas=0 does not overwrite')
    const v1 = await consul.kv.get(key)
    assert.equal(v1?.Value, '1')
    const index = v1?.ModifyIndex ?? 0
    assert.equal(await consul.kv.set({ key, value: '2', cas: index }), true)
    refused(await consul.kv.set({ key, value: '3', cas: index }), 'a stale index fails')
    const v2 = await consul.kv.get(key)
    assert.equal(v2?.Value, '2')
    assert.ok((v2?.ModifyIndex ?? 0) > index)
    assert.equal(v2?.CreateIndex, v1?.CreateIndex)
    refused(await consul.kv.del({ key, cas: index }), 'delete with a stale index fails')
    assert.equal(await consul.kv.del({ key, cas: v2?.ModifyIndex ?? 0 }), true)
    assert.equal(await consul.kv.get(key), undefined)
  })

  test('a value over 512 KiB is refused', async () => {
    await assert.rejects(client().kv.set(unique('big'), 'x'.repeat(512 * 1024 + 1)), (err: { statusCode?: number }) => {
      return err.statusCode === 413
    })
  })
})

describe('sessions and locks', () => {
  test('acquire and release: LockIndex counts acquisitions, only the holder releases', async () => {
    const consul = client()
    const key = unique('lock')
    const a = (await consul.session.create({ name: 'a', ttl: '30s', lockdelay: '1s' })).ID
    const b = (await consul.session.create({ name: 'b', ttl: '30s', lockdelay: '1s' })).ID
    try {
      assert.equal(await consul.kv.set({ key, value: 'a', acquire: a }), true)
      let e = await consul.kv.get(key)
      assert.equal(e?.LockIndex, 1)
      assert.equal((e as { Session?: string } | null)?.Session, a)
      refused(await consul.kv.set({ key, value: 'b', acquire: b }), 'held by another session')
      assert.equal(await consul.kv.set({ key, value: 'a2', acquire: a }), true, 'the holder may update')
      e = await consul.kv.get(key)
      assert.equal(e?.LockIndex, 1, 're-acquiring by the holder does not count')
      assert.equal(e?.Value, 'a2')
      refused(await consul.kv.set({ key, value: 'x', release: b }), 'only the holder releases')
      assert.equal(await consul.kv.set({ key, value: 'free', release: a }), true)
      e = await consul.kv.get(key)
      assert.equal((e as { Session?: string } | null)?.Session, undefined)
      assert.equal(e?.LockIndex, 1)
      // An explicit release applies no lock-delay.
      assert.equal(await consul.kv.set({ key, value: 'b', acquire: b }), true)
      assert.equal((await consul.kv.get(key))?.LockIndex, 2)
      await assert.rejects(
        consul.kv.set({ key: unique('nosession'), value: 'x', acquire: randomUUID() }),
        (err: { statusCode?: number }) => err.statusCode === 500,
      )
    } finally {
      await consul.session.destroy(a)
      await consul.session.destroy(b)
    }
  })

  test('sessions renew, report their info, and 404 once gone', async () => {
    const consul = client()
    const id = (await consul.session.create({ name: 'info', ttl: '30s', behavior: 'release' })).ID
    const info = await consul.session.info(id)
    assert.equal(info.ID, id)
    assert.equal(info.Name, 'info')
    assert.equal(info.Behavior, 'release')
    assert.equal(info.TTL, '30s')
    const renewed = await consul.session.renew(id)
    assert.equal(renewed[0]?.ID, id)
    await consul.session.destroy(id)
    assert.equal(await consul.session.info(id), undefined)
    await assert.rejects(consul.session.renew(id), (err: { statusCode?: number }) => err.statusCode === 404)
  })

  test('a session that is not renewed expires and releases its locks', async () => {
    const consul = client()
    // Consul's minimum session TTL is 10 s and it may take up to twice that; the emulator allows 1 s.
    const ttlMs = real ? 10_000 : 1000
    const key = unique('expire')
    const id = (await consul.session.create({ ttl: `${ttlMs / 1000}s`, lockdelay: '0s' })).ID
    assert.equal(await consul.kv.set({ key, value: 'held', acquire: id }), true)
    await consul.session.renew(id)
    const renewedAt = Date.now()
    await waitFor(
      'the session to expire',
      async () => ((await consul.kv.get(key)) as { Session?: string } | null)?.Session === undefined,
      3 * ttlMs,
    )
    assert.ok(Date.now() - renewedAt >= ttlMs - 100, 'not before the TTL')
    assert.equal((await consul.kv.get(key))?.Value, 'held', 'behavior release keeps the key')
    await assert.rejects(consul.session.renew(id), (err: { statusCode?: number }) => err.statusCode === 404)
  })

  test('behavior delete removes the keys of an invalidated session', async () => {
    const consul = client()
    const key = unique('ephemeral')
    const id = (await consul.session.create({ ttl: '30s', behavior: 'delete', lockdelay: '0s' })).ID
    assert.equal(await consul.kv.set({ key, value: 'x', acquire: id }), true)
    await consul.session.destroy(id)
    assert.equal(await consul.kv.get(key), undefined)
  })

  test('lock-delay: a lock freed by invalidation cannot be taken again until the delay passes', async () => {
    const consul = client()
    const key = unique('delay')
    const a = (await consul.session.create({ ttl: '30s', lockdelay: '1s' })).ID
    const b = (await consul.session.create({ ttl: '30s', lockdelay: '1s' })).ID
    try {
      assert.equal(await consul.kv.set({ key, value: 'a', acquire: a }), true)
      await consul.session.destroy(a)
      const freed = Date.now()
      assert.equal(((await consul.kv.get(key)) as { Session?: string } | null)?.Session, undefined, 'released')
      refused(await consul.kv.set({ key, value: 'b', acquire: b }), 'within the lock-delay')
      await waitFor('the lock-delay to pass', () => consul.kv.set({ key, value: 'b', acquire: b }), 5000)
      assert.ok(Date.now() - freed >= 900, 'not before the delay')
      assert.equal((await consul.kv.get(key))?.LockIndex, 2)
    } finally {
      await consul.session.destroy(b)
    }
  })
})

describe('the emulator itself', () => {
  test('paused, it answers nothing and its clock stands still; resumed, it answers', emulatorOnly, async () => {
    const e = await startConsulEmulator()
    try {
      const consul = new Consul({ baseUrl: `${e.url}/v1`, defaults: {} } as ConstructorParameters<typeof Consul>[0])
      const name = unique('pause')
      await consul.agent.service.register({ name, id: name, check: { name: 'ttl', ttl: '500ms', timeout: '1s' } })
      await consul.agent.check.pass(`service:${name}`)
      e.pause()
      let answered = false
      const pending = health(consul, name, true).then((r) => {
        answered = true
        return r
      })
      await new Promise((r) => setTimeout(r, 1000))
      assert.equal(answered, false, 'no answer while paused')
      e.resume()
      const entries = await pending
      assert.equal(entries.length, 1, 'the TTL did not run out while the emulator was paused')
      consul.destroy()
    } finally {
      await e.close()
    }
  })

  test('runs as its own process, survives SIGSTOP/SIGCONT, exits on SIGTERM', emulatorOnly, async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(import.meta.dirname, '..', 'fixtures', 'consul-emulator.ts'), '--port', '0'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    try {
      const [line] = (await once(child.stdout, 'data')) as [Buffer]
      const m = /^consul emulator on (http:\/\/127\.0\.0\.1:\d+)\n$/.exec(line.toString())
      assert.ok(m, `printed ${JSON.stringify(line.toString())}`)
      const url = m[1] as string
      assert.equal(await (await fetch(`${url}/v1/kv/x`, { method: 'PUT', body: 'y' })).json(), true)
      child.kill('SIGSTOP')
      const stalled = fetch(`${url}/v1/kv/x?raw`).then((r) => r.text())
      const raced = await Promise.race([stalled, new Promise((r) => setTimeout(() => r('timeout'), 500))])
      assert.equal(raced, 'timeout', 'a stopped emulator does not answer')
      child.kill('SIGCONT')
      assert.equal(await stalled, 'y')
      child.kill('SIGTERM')
      const [code] = (await once(child, 'exit')) as [number | null]
      assert.equal(code, 0)
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
  })
})
