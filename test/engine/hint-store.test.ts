// The hinted-handoff queue on a real RocksDB database: order, isolation of targets, acks, drops by
// age and by size, counters, a restart, and every acknowledged append surviving kill -9.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { describe, it } from 'node:test'
import { type HintDrop, HintStore, type HintStoreOptions, type HintTargetStats } from '../../src/cluster/hint-store.js'
import { ManualClock } from './manual-clock.js'

const T0 = Date.UTC(2026, 0, 1)
const HOUR = 3_600_000

interface Fixture {
  readonly dir: string
  readonly clock: ManualClock
  readonly drops: HintDrop[]
  open(extra?: Partial<HintStoreOptions>): Promise<HintStore>
}

/** Runs fn with a fresh folder, a manual clock and a drop log; removes the folder afterwards. */
async function withFolder(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'v3-hints-'))
  const clock = new ManualClock(T0)
  const drops: HintDrop[] = []
  const opened: HintStore[] = []
  const fixture: Fixture = {
    dir,
    clock,
    drops,
    open: async (extra = {}) => {
      const store = await HintStore.open({
        dir,
        maxBytes: 1 << 20,
        maxAgeMs: HOUR,
        now: clock.now,
        onDrop: (d) => drops.push(d),
        ...extra,
      })
      opened.push(store)
      return store
    },
  }
  try {
    await fn(fixture)
  } finally {
    for (const store of opened) await store.close()
    await rm(dir, { recursive: true, force: true })
  }
}

const text = (s: string): Uint8Array => Buffer.from(s)
const bodies = (hints: ReadonlyArray<{ body: Uint8Array }>): string[] =>
  hints.map((h) => Buffer.from(h.body).toString())

function statsOf(store: HintStore, target: string): HintTargetStats {
  const s = store.stats().find((x) => x.target === target)
  assert.ok(s, `no stats for ${target}`)
  return s
}

describe('HintStore', () => {
  it('keeps append order per target and isolates targets, including one whose id prefixes another', async () => {
    await withFolder(async (f) => {
      const store = await f.open()
      for (let i = 0; i < 5; i++) {
        assert.equal(await store.append('n1', text(`a${i}`)), true)
        assert.equal(await store.append('n10', text(`b${i}`)), true)
      }
      assert.equal(await store.append('n', text('c0')), true)
      assert.deepEqual(store.targets(), ['n', 'n1', 'n10'])
      const n1 = await store.peek('n1', 100, 1 << 20)
      assert.deepEqual(bodies(n1), ['a0', 'a1', 'a2', 'a3', 'a4'])
      assert.deepEqual(bodies(await store.peek('n10', 100, 1 << 20)), ['b0', 'b1', 'b2', 'b3', 'b4'])
      assert.deepEqual(bodies(await store.peek('n', 100, 1 << 20)), ['c0'])
      assert.deepEqual(await store.peek('n2', 100, 1 << 20), [])
      for (let i = 1; i < n1.length; i++) assert.ok(n1[i]!.seq > n1[i - 1]!.seq)
      assert.ok(n1.every((h) => h.createdMs === T0))
      // Acking all of n1 leaves n10 and n alone.
      await store.ack('n1', n1.at(-1)!.seq)
      assert.deepEqual(await store.peek('n1', 100, 1 << 20), [])
      assert.equal((await store.peek('n10', 100, 1 << 20)).length, 5)
      assert.deepEqual(store.targets(), ['n', 'n10'])
    })
  })

  it('peeks at most maxCount hints and about maxBytes, but always at least one', async () => {
    await withFolder(async (f) => {
      const store = await f.open()
      for (let i = 0; i < 10; i++) await store.append('n1', new Uint8Array(100).fill(i))
      assert.equal((await store.peek('n1', 3, 1 << 20)).length, 3)
      assert.equal((await store.peek('n1', 100, 250)).length, 2)
      const one = await store.peek('n1', 100, 10)
      assert.equal(one.length, 1)
      assert.deepEqual([...one[0]!.body], new Array(100).fill(0))
      // The body is copied at append: changing the caller's buffer later changes nothing.
      const body = text('x')
      await store.append('n2', body)
      body[0] = 0x79
      assert.deepEqual(bodies(await store.peek('n2', 1, 1)), ['x'])
    })
  })

  it('acks delete through the given sequence only, and count as delivered', async () => {
    await withFolder(async (f) => {
      const store = await f.open()
      for (let i = 0; i < 5; i++) await store.append('n1', text(`h${i}`))
      // A hint counts in the backlog from the moment its append starts: writes queue behind it.
      const appending = store.append('n1', text('h5'))
      assert.equal(store.backlog('n1'), 6)
      await appending
      assert.equal(store.backlog('n9'), 0)
      const all = await store.peek('n1', 100, 1 << 20)
      await store.ack('n1', all[2]!.seq)
      assert.deepEqual(bodies(await store.peek('n1', 100, 1 << 20)), ['h3', 'h4', 'h5'])
      // An ack below the oldest queued hint, or of an unknown target, does nothing.
      await store.ack('n1', all[0]!.seq)
      await store.ack('n9', 1_000)
      assert.deepEqual(bodies(await store.peek('n1', 100, 1 << 20)), ['h3', 'h4', 'h5'])
      const s = statsOf(store, 'n1')
      assert.deepEqual(
        { hints: s.hints, bytes: s.bytes, queued: s.queued, delivered: s.delivered, dropped: s.dropped },
        { hints: 3, bytes: 6, queued: 6, delivered: 3, dropped: 0 },
      )
      assert.equal(s.needsRepair, false)
      assert.equal(store.bytes, 6)
      assert.equal(store.backlog('n1'), 3)
    })
  })

  it('keeps hints, their order, growing sequences and the repair mark across a restart', async () => {
    await withFolder(async (f) => {
      let store = await f.open({ maxBytes: 10 })
      await store.append('n1', text('aaaa'))
      await store.append('n10', text('bbbb'))
      await store.append('n1', text('cc'))
      assert.equal(await store.append('n10', text('dd')), false)
      const before = await store.peek('n1', 100, 1 << 20)
      await store.close()

      store = await f.open({ maxBytes: 10 })
      const after = await store.peek('n1', 100, 1 << 20)
      assert.deepEqual(after, before)
      assert.deepEqual(bodies(await store.peek('n10', 100, 1 << 20)), ['bbbb'])
      assert.equal(store.bytes, 10)
      const n1 = statsOf(store, 'n1')
      const n10 = statsOf(store, 'n10')
      // Counters start again at open; the backlog and the repair mark do not.
      assert.deepEqual([n1.hints, n1.bytes, n1.oldestMs, n1.queued, n1.needsRepair], [2, 6, T0, 0, false] as const)
      assert.deepEqual([n10.hints, n10.bytes, n10.dropped, n10.needsRepair], [1, 4, 0, true] as const)

      // Sequences keep growing, also after a restart that finds the queue empty.
      await store.ack('n1', after.at(-1)!.seq)
      await store.ack('n10', Number.MAX_SAFE_INTEGER)
      assert.deepEqual(store.targets(), [])
      await store.close()
      store = await f.open()
      await store.append('n1', text('e'))
      const [e] = await store.peek('n1', 1, 1)
      assert.ok(e && e.seq > after.at(-1)!.seq, `sequence ${e?.seq} after ${after.at(-1)!.seq}`)
      assert.equal(statsOf(store, 'n10').needsRepair, true)

      await store.clearRepair('n10')
      assert.equal(statsOf(store, 'n10').needsRepair, false)
      await store.close()
      store = await f.open()
      assert.equal(statsOf(store, 'n1').needsRepair, false)
      assert.equal(
        store.stats().some((s) => s.target === 'n10'),
        false,
      )
    })
  })

  it('drops hints past the age window instead of delivering them, reports them and marks the target', async () => {
    await withFolder(async (f) => {
      const store = await f.open()
      await store.append('n1', text('old1'))
      await store.append('n1', text('old22'))
      f.clock.t = T0 + 30 * 60_000
      await store.append('n1', text('new'))
      await store.append('n2', text('n2old'))
      assert.equal(statsOf(store, 'n1').oldestMs, T0)

      f.clock.t = T0 + HOUR + 1
      assert.deepEqual(bodies(await store.peek('n1', 100, 1 << 20)), ['new'])
      assert.deepEqual(f.drops, [{ target: 'n1', hints: 2, bytes: 9, reason: 'age' }])
      const n1 = statsOf(store, 'n1')
      assert.deepEqual([n1.hints, n1.bytes, n1.oldestMs, n1.dropped, n1.needsRepair], [
        1,
        3,
        T0 + 30 * 60_000,
        2,
        true,
      ] as const)
      // n2 has not been peeked: dropExpired takes it, and n1's hint once it too is old.
      f.clock.t = T0 + 30 * 60_000 + HOUR + 1
      await store.dropExpired()
      assert.deepEqual(f.drops.slice(1), [
        { target: 'n1', hints: 1, bytes: 3, reason: 'age' },
        { target: 'n2', hints: 1, bytes: 5, reason: 'age' },
      ])
      assert.deepEqual(store.targets(), [])
      assert.equal(store.bytes, 0)
      assert.equal(statsOf(store, 'n2').needsRepair, true)
      await store.dropExpired()
      assert.equal(f.drops.length, 3)
    })
  })

  it('forgets a target: its hints and repair mark go durably, uncounted as drops, and other targets stay', async () => {
    await withFolder(async (f) => {
      const store = await f.open({ maxBytes: 100 })
      assert.equal(await store.append('n1', new Uint8Array(30)), true)
      assert.equal(await store.append('n1', new Uint8Array(20)), true)
      assert.equal(await store.append('n2', new Uint8Array(10)), true)
      // A full drop marks n1 for repair.
      assert.equal(await store.append('n1', new Uint8Array(90)), false)
      assert.equal(statsOf(store, 'n1').needsRepair, true)
      assert.equal(await store.forget('n1'), 2)
      const n1 = statsOf(store, 'n1')
      assert.deepEqual([n1.hints, n1.bytes, n1.dropped, n1.delivered, n1.needsRepair], [0, 0, 1, 0, false] as const)
      assert.deepEqual(store.targets(), ['n2'])
      assert.equal(store.bytes, 10)
      assert.equal(await store.forget('n1'), 0, 'nothing left to forget')
      assert.equal(await store.forget('never'), 0)
      await store.close()
      const reopened = await f.open()
      assert.deepEqual(reopened.targets(), ['n2'])
      assert.deepEqual(await reopened.peek('n1', 10, 1 << 20), [])
      assert.equal(reopened.stats().find((x) => x.target === 'n1')?.needsRepair ?? false, false)
    })
  })

  it('refuses an append beyond maxBytes as a full drop, and takes appends again once hints are delivered', async () => {
    await withFolder(async (f) => {
      const store = await f.open({ maxBytes: 100 })
      assert.equal(await store.append('n1', new Uint8Array(60)), true)
      assert.equal(await store.append('n2', new Uint8Array(40)), true)
      assert.equal(await store.append('n2', new Uint8Array(1)), false)
      assert.equal(await store.append('n3', new Uint8Array(101)), false)
      assert.deepEqual(f.drops, [
        { target: 'n2', hints: 1, bytes: 1, reason: 'full' },
        { target: 'n3', hints: 1, bytes: 101, reason: 'full' },
      ])
      const n2 = statsOf(store, 'n2')
      assert.deepEqual([n2.hints, n2.queued, n2.dropped, n2.needsRepair], [1, 1, 1, true] as const)
      assert.equal(statsOf(store, 'n1').needsRepair, false)
      assert.deepEqual(store.targets(), ['n1', 'n2'])
      const [h] = await store.peek('n1', 1, 1)
      await store.ack('n1', h!.seq)
      assert.equal(await store.append('n2', new Uint8Array(50)), true)
      assert.equal(store.bytes, 90)
    })
  })

  it('keeps the counters exact under many interleaved appends and acks', async () => {
    await withFolder(async (f) => {
      const store = await f.open()
      const targets = ['a', 'ab', 'abc']
      let delivered = 0
      // 600 appends in flight at once, and a deliverer per target acking what it peeked meanwhile:
      // 20 rounds of at most 7 hints each, and more while nothing has come through yet (an append
      // resolves once its log sync, in the thread pool, is done), so that some are delivered and
      // some stay queued however fast the syncs are.
      const appends = Array.from({ length: 600 }, (_, i) => store.append(targets[i % 3]!, text(`${i}`)))
      const deliverers = targets.map(async (t) => {
        for (let round = 0; round < 20 || (delivered === 0 && round < 100_000); round++) {
          const hints = await store.peek(t, 7, 1 << 20)
          if (hints.length > 0) {
            await store.ack(t, hints.at(-1)!.seq)
            delivered += hints.length
          }
          await new Promise((resolve) => setImmediate(resolve))
        }
      })
      assert.ok((await Promise.all(appends)).every((ok) => ok))
      await Promise.all(deliverers)
      assert.ok(delivered > 0 && delivered < 600, `${delivered} delivered while appending`)
      const stats = store.stats()
      const sum = (k: 'hints' | 'queued' | 'delivered' | 'bytes'): number => stats.reduce((n, s) => n + s[k], 0)
      assert.equal(sum('queued'), 600)
      assert.equal(sum('delivered'), delivered)
      assert.equal(sum('hints'), 600 - delivered)
      assert.equal(sum('bytes'), store.bytes)
      // What is left is exactly what is on disk, in order, with no gaps per target.
      let onDisk = 0
      let bytes = 0
      for (const t of targets) {
        const left = await store.peek(t, 1000, 1 << 30)
        const numbers = bodies(left).map(Number)
        for (let i = 1; i < numbers.length; i++) assert.equal(numbers[i], numbers[i - 1]! + 3)
        onDisk += left.length
        bytes += left.reduce((n, h) => n + h.body.length, 0)
      }
      assert.equal(onDisk, 600 - delivered)
      assert.equal(bytes, store.bytes)
      await store.close()
      const reopened = await f.open()
      assert.equal(reopened.bytes, bytes)
      assert.equal(
        reopened.stats().reduce((n, s) => n + s.hints, 0),
        onDisk,
      )
    })
  })

  it('rejects bad targets and bodies with a clear error, and every call once closed', async () => {
    await withFolder(async (f) => {
      const store = await f.open()
      await assert.rejects(store.append('', text('x')), /invalid target: must be a non-empty string/)
      await assert.rejects(store.append('a\0b', text('x')), /invalid target: must not contain/)
      await assert.rejects(store.append('\ud800', text('x')), /invalid target: must be well-formed/)
      await assert.rejects(store.append('x'.repeat(1025), text('x')), /invalid target: must be at most 1024 bytes/)
      await assert.rejects(store.append('n1', 'x' as unknown as Uint8Array), /invalid body: must be a Uint8Array/)
      await assert.rejects(store.peek('n1', 0, 10), /invalid maxCount/)
      await assert.rejects(store.ack('', 1), /invalid target/)
      assert.deepEqual(store.targets(), [])
      await assert.rejects(HintStore.open({ dir: f.dir, maxBytes: 0, maxAgeMs: 1 }), /invalid maxBytes/)
      await store.close()
      await assert.rejects(store.append('n1', text('x')), /hint store .* is closed/)
    })
  })

  it('keeps every hint whose append resolved when the process is killed with SIGKILL', async () => {
    await withFolder(async (f) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/hint-writer.ts', f.dir], {
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      const acked = new Map<string, Set<number>>()
      let count = 0
      try {
        await new Promise<void>((resolve, reject) => {
          child.once('exit', (code) => reject(new Error(`writer exited early with ${code}`)))
          createInterface({ input: child.stdout }).on('line', (line) => {
            const m = /^ack (\S+) (\d+)$/.exec(line)
            if (!m) return
            const set = acked.get(m[1]!) ?? new Set<number>()
            set.add(Number(m[2]))
            acked.set(m[1]!, set)
            if (++count === 600) {
              child.kill('SIGKILL')
              resolve()
            }
          })
        })
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL')
      }
      await new Promise((resolve) => child.once('close', resolve))
      const store = await f.open({ maxBytes: 1 << 30 })
      for (const [target, numbers] of acked) {
        const hints = await store.peek(target, 1_000_000, 1 << 30)
        // Batches are written in order, so what survived is a prefix of each target's appends.
        assert.deepEqual(
          bodies(hints),
          hints.map((_, i) => `${target}:${i}`),
        )
        for (const n of numbers) assert.ok(n < hints.length, `${target}:${n} was acknowledged but is missing`)
      }
    })
  })
})
