/**
 * What the Prometheus endpoints need of the engines: writes with acceptNaN, the exact bit patterns
 * of NaN values (the staleness marker among them) wherever a point can live, and selectors without
 * a metric, with matchers on __name__ and on tags a series lacks. On the basic engine in a temp
 * folder, on the memory engine plugin, and on a cluster of three basic engines over the in-memory
 * peer transport.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, it } from 'node:test'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import type { StorageEngine } from '../../src/engine/storage-engine.js'
import { ValidationError } from '../../src/model/errors.js'
import type { Matcher, SeriesRef, SeriesWrite, Tag } from '../../src/model/types.js'
import {
  activeMembers,
  type MemoryCluster,
  type MemoryClusterNode,
  startMemoryCluster,
} from '../fixtures/memory-cluster.js'
import { MemoryEngine } from '../fixtures/memory-engine.js'
import {
  assertNanLatest,
  assertNanSeries,
  bitsOf,
  doubles,
  NORMAL_NAN,
  nanBatch,
  PATTERNS,
  STALE_NAN,
  STEP_MS,
} from '../fixtures/nan-values.js'
import { ManualClock } from './manual-clock.js'

const HOUR = 3_600_000
/** Recent hours: on a cluster, write versions are kept for recent blocks only. */
const T0 = Math.floor(Date.now() / HOUR) * HOUR - 6 * HOUR

async function tempDir(name: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `v3-prom-${name}-`))
}

function basicEngine(dataDir: string, clock?: ManualClock, options: { allowNaN?: boolean } = {}): BasicEngine {
  // Long timer intervals: the tests drive sealing and moving through compact().
  return new BasicEngine(
    {
      dataDir,
      sync: 'off',
      sealIntervalMs: HOUR,
      moveIntervalMs: HOUR,
      hotWindowMs: HOUR,
      limits: { allowNaN: options.allowNaN ?? false },
    },
    clock === undefined ? {} : { clock },
  )
}

const nanSelector = { metric: 'nan', matchers: [] }
const everything = (startMs: number) => ({ selector: nanSelector, startMs, endMs: startMs + HOUR })

function one(metric: string, values: ArrayLike<number>, acceptNaN?: boolean) {
  const timestamps = Array.from(values, (_, i) => T0 + i * STEP_MS)
  return {
    ...(acceptNaN === undefined ? {} : { acceptNaN }),
    series: [{ metric, tags: [{ key: 's', value: 'x' }], timestamps, values }],
  }
}

function fields(err: unknown): string[] {
  assert.ok(err instanceof ValidationError, `a ValidationError, got ${String(err)}`)
  return err.violations.map((v) => v.field)
}

describe('WriteBatch.acceptNaN on the basic engine', () => {
  let dir: string
  let engine: BasicEngine
  let lenient: BasicEngine

  before(async () => {
    dir = await tempDir('accept')
    engine = basicEngine(join(dir, 'strict'))
    lenient = basicEngine(join(dir, 'lenient'), undefined, { allowNaN: true })
    await engine.open()
    await lenient.open()
  })

  after(async () => {
    await engine.close()
    await lenient.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('refuses NaN and ±Infinity without it, as the limits say', async () => {
    await assert.rejects(engine.write(one('m', [1, Number.NaN])), (err) => {
      assert.deepEqual(fields(err), ['series[0].values[1]'])
      return true
    })
    await assert.rejects(engine.write(one('m', [Number.POSITIVE_INFINITY], false)), (err) => {
      assert.deepEqual(fields(err), ['series[0].values[0]'])
      return true
    })
    // allowNaN takes NaN, but never ±Infinity.
    await lenient.write(one('m', [Number.NaN]))
    await assert.rejects(lenient.write(one('m', [1, Number.NEGATIVE_INFINITY])), (err) => {
      assert.deepEqual(fields(err), ['series[0].values[1]'])
      return true
    })
    const stored = await engine.listSeries({ metric: 'm', matchers: [] })
    assert.deepEqual(stored, [])
  })

  it('stores NaN and ±Infinity with it, whatever allowNaN says', async () => {
    const values = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2]
    const result = await engine.write(one('inf', values, true))
    assert.deepEqual(result, { pointsWritten: 4, seriesWritten: 1 })
    const [got] = await engine.query({ selector: { metric: 'inf', matchers: [] }, startMs: T0, endMs: T0 + HOUR })
    assert.deepEqual([...got!.values], values)
  })

  it('still validates everything else of the batch', async () => {
    const bad: SeriesWrite[] = [
      { metric: '9bad', tags: [], timestamps: [T0], values: [Number.NaN] },
      { metric: 'ok', tags: [{ key: 'k', value: '' }], timestamps: [T0], values: [1] },
      { metric: 'ok', tags: [], timestamps: [T0, T0 + 1], values: [Number.NaN] },
      { metric: 'ok', tags: [], timestamps: [1.5], values: [Number.POSITIVE_INFINITY] },
    ]
    await assert.rejects(engine.write({ acceptNaN: true, series: bad }), (err) => {
      assert.deepEqual(fields(err), [
        'series[0].metric',
        'series[1].tags[0].value',
        'series[2].values',
        'series[3].timestamps[0]',
      ])
      return true
    })
    assert.deepEqual(await engine.listSeries({ metric: 'ok', matchers: [] }), [])
  })
})

describe('NaN bit patterns on the basic engine', () => {
  let dir: string

  before(async () => {
    dir = await tempDir('bits')
  })

  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('come back exactly from the write buffer, hot blocks, cold runs and after a restart', async () => {
    const clock = new ManualClock(T0 + 3 * HOUR)
    const cold = T0 + 5 * 60_000
    const hot = T0 + 3 * HOUR - 5 * 60_000
    let engine = basicEngine(join(dir, 'tiers'), clock)
    await engine.open()
    try {
      // The same values twice: far enough back to be sealed straight into a cold run, and recent
      // enough to stay in a hot block.
      await engine.write(nanBatch(cold))
      await engine.write(nanBatch(hot))
      const check = async (where: string): Promise<void> => {
        assertNanSeries(await engine.query(everything(cold)), cold, `${where}, old points`)
        assertNanSeries(await engine.query(everything(hot)), hot, `${where}, recent points`)
        // Asked again, the answer comes from the result cache.
        assertNanSeries(await engine.query(everything(hot)), hot, `${where}, recent points again`)
        assertNanLatest(await engine.latest(nanSelector), hot, where)
      }
      await check('in the write buffer')
      assert.equal((await engine.stats()).bufferedPoints, 24)

      await engine.compact()
      let stats = await engine.stats()
      assert.equal(stats.bufferedPoints, 0)
      assert.ok(stats.coldRuns > 0 && stats.hotBlocks > 0, JSON.stringify(stats))
      await check('in hot blocks and cold runs')

      // A late write merges into both stored copies: a run and a block are decoded and encoded again.
      const late = { acceptNaN: true, series: [{ ...nanBatch(0).series[1]!, timestamps: [T0], values: doubles([1n]) }] }
      await engine.write(late)
      await engine.compact()
      await check('after merging a late point into the stored blocks')

      // Three hours on, the hot blocks move to cold runs.
      clock.t += 3 * HOUR
      await engine.compact()
      stats = await engine.stats()
      assert.equal(stats.hotBlocks, 0)
      await check('all in cold runs')

      await engine.close()
      engine = basicEngine(join(dir, 'tiers'), clock)
      await engine.open()
      await check('after a restart')
    } finally {
      await engine.close()
    }
  })

  it('come back exactly from the write-ahead log after SIGKILL', async () => {
    const data = join(dir, 'killed')
    const start = T0 + 60_000
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/nan-writer.ts', data, String(start)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    try {
      await new Promise<void>((resolve, reject) => {
        child.once('exit', (code) => reject(new Error(`the writer exited early with ${code}`)))
        createInterface({ input: child.stdout }).on('line', (line) => {
          if (line === 'ack') resolve()
        })
      })
    } finally {
      child.kill('SIGKILL')
    }
    if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('close', r))
    const engine = basicEngine(data)
    await engine.open()
    try {
      // Replayed from the write-buffer family into the head: nothing was sealed before the kill.
      assert.equal((await engine.stats()).bufferedPoints, 12)
      assertNanSeries(await engine.query(everything(start)), start, 'replayed')
      assertNanLatest(await engine.latest(nanSelector), start, 'replayed')
      await engine.compact()
      assertNanSeries(await engine.query(everything(start)), start, 'replayed and sealed')
    } finally {
      await engine.close()
    }
  })

  it('come back exactly from the memory engine', async () => {
    const engine = new MemoryEngine()
    await engine.open()
    await engine.write(nanBatch(T0))
    assertNanSeries(await engine.query(everything(T0)), T0, 'memory engine')
    assertNanLatest(await engine.latest(nanSelector), T0, 'memory engine')
    await engine.close()
  })
})

/** The series the selector tests write, all with one point at T0. */
const SELECTOR_SERIES: readonly { metric: string; tags: Record<string, string> }[] = [
  { metric: 'cpu', tags: { host: 'a', job: 'x' } },
  { metric: 'cpu', tags: { host: 'b' } },
  { metric: 'cpu_idle', tags: { host: 'c' } },
  { metric: 'mem', tags: { host: 'a', job: 'x' } },
  { metric: 'disk', tags: { job: 'y' } },
]

function tagsOf(record: Record<string, string>): Tag[] {
  return Object.entries(record).map(([key, value]) => ({ key, value }))
}

function nameOf(s: SeriesRef): string {
  const tags = [...s.tags].sort((a, b) => (a.key < b.key ? -1 : 1)).map((t) => `${t.key}=${t.value}`)
  return `${s.metric}{${tags.join(',')}}`
}

const m = (key: string, op: Matcher['op'], value: string): Matcher => ({ key, op, value })

/** Selector → the series it must select, as nameOf writes them. */
const SELECTOR_CASES: readonly { metric: string; matchers: Matcher[]; want: string[] }[] = [
  {
    metric: '',
    matchers: [],
    want: ['cpu_idle{host=c}', 'cpu{host=a,job=x}', 'cpu{host=b}', 'disk{job=y}', 'mem{host=a,job=x}'],
  },
  { metric: '', matchers: [m('job', 'eq', 'x')], want: ['cpu{host=a,job=x}', 'mem{host=a,job=x}'] },
  {
    metric: '',
    matchers: [m('host', 'eq', 'a'), m('job', 'neq', 'y')],
    want: ['cpu{host=a,job=x}', 'mem{host=a,job=x}'],
  },
  { metric: '', matchers: [m('__name__', 'eq', 'cpu')], want: ['cpu{host=a,job=x}', 'cpu{host=b}'] },
  { metric: '', matchers: [m('__name__', 'eq', 'nope')], want: [] },
  {
    metric: '',
    matchers: [m('__name__', 'neq', 'cpu')],
    want: ['cpu_idle{host=c}', 'disk{job=y}', 'mem{host=a,job=x}'],
  },
  // Anchored, as tag regexes are: "cpu" does not match cpu_idle.
  { metric: '', matchers: [m('__name__', 'regex', 'cpu')], want: ['cpu{host=a,job=x}', 'cpu{host=b}'] },
  {
    metric: '',
    matchers: [m('__name__', 'regex', 'cpu.*')],
    want: ['cpu_idle{host=c}', 'cpu{host=a,job=x}', 'cpu{host=b}'],
  },
  { metric: '', matchers: [m('__name__', 'not_regex', 'cpu.*|d.+')], want: ['mem{host=a,job=x}'] },
  {
    metric: '',
    matchers: [m('__name__', 'regex', 'cpu.*'), m('host', 'neq', 'b')],
    want: ['cpu_idle{host=c}', 'cpu{host=a,job=x}'],
  },
  // With a metric, __name__ matchers narrow it further.
  { metric: 'cpu', matchers: [m('__name__', 'regex', 'c.*')], want: ['cpu{host=a,job=x}', 'cpu{host=b}'] },
  { metric: 'cpu', matchers: [m('__name__', 'eq', 'mem')], want: [] },
  { metric: 'cpu', matchers: [m('__name__', 'not_regex', 'cpu')], want: [] },
  // A tag the series lacks compares as the empty value.
  { metric: '', matchers: [m('job', 'eq', '')], want: ['cpu_idle{host=c}', 'cpu{host=b}'] },
  { metric: 'cpu', matchers: [m('job', 'eq', '')], want: ['cpu{host=b}'] },
  { metric: '', matchers: [m('job', 'neq', '')], want: ['cpu{host=a,job=x}', 'disk{job=y}', 'mem{host=a,job=x}'] },
  {
    metric: '',
    matchers: [m('job', 'regex', 'x|')],
    want: ['cpu_idle{host=c}', 'cpu{host=a,job=x}', 'cpu{host=b}', 'mem{host=a,job=x}'],
  },
  { metric: '', matchers: [m('job', 'regex', '.+')], want: ['cpu{host=a,job=x}', 'disk{job=y}', 'mem{host=a,job=x}'] },
  { metric: '', matchers: [m('job', 'not_regex', 'x')], want: ['cpu_idle{host=c}', 'cpu{host=b}', 'disk{job=y}'] },
  { metric: 'cpu', matchers: [m('rack', 'not_regex', '.+')], want: ['cpu{host=a,job=x}', 'cpu{host=b}'] },
]

async function writeSelectorSeries(engine: StorageEngine, at: number): Promise<void> {
  await engine.write({
    series: SELECTOR_SERIES.map((s, i) => ({ metric: s.metric, tags: tagsOf(s.tags), timestamps: [at], values: [i] })),
  })
}

/** Checks every case on query, latest and listSeries; each series carries its own metric. */
async function checkSelectors(engine: StorageEngine, at: number, where: string): Promise<void> {
  for (const c of SELECTOR_CASES) {
    const selector = { metric: c.metric, matchers: c.matchers }
    const what = `${where}: ${JSON.stringify(selector)}`
    const queried = await engine.query({ selector, startMs: at, endMs: at + 1 })
    assert.deepEqual(queried.map(nameOf).sort(), c.want, `${what} query`)
    for (const s of queried) {
      const i = SELECTOR_SERIES.findIndex((w) => nameOf({ metric: w.metric, tags: tagsOf(w.tags) }) === nameOf(s))
      assert.deepEqual([...s.values], [i], `${what}: the points of ${nameOf(s)}`)
    }
    assert.deepEqual((await engine.latest(selector)).map(nameOf).sort(), c.want, `${what} latest`)
    assert.deepEqual((await engine.listSeries(selector)).map(nameOf).sort(), c.want, `${what} listSeries`)
  }
}

/** A metric-less selection is cached as any other: a new series of any metric must show up at once. */
async function checkNewSeriesShowUp(engine: StorageEngine, at: number, where: string): Promise<void> {
  const selector = { metric: '', matchers: [m('job', 'eq', 'x')] }
  const request = { selector, startMs: at, endMs: at + 1 }
  for (let i = 0; i < 2; i++) {
    assert.equal((await engine.query(request)).length, 2)
    assert.equal((await engine.listSeries(selector)).length, 2)
  }
  await engine.write({ series: [{ metric: 'net', tags: [{ key: 'job', value: 'x' }], timestamps: [at], values: [9] }] })
  const want = ['cpu{host=a,job=x}', 'mem{host=a,job=x}', 'net{job=x}']
  assert.deepEqual((await engine.query(request)).map(nameOf).sort(), want, `${where}: query after a new series`)
  assert.deepEqual((await engine.listSeries(selector)).map(nameOf).sort(), want, `${where}: list after a new series`)
  assert.deepEqual((await engine.latest(selector)).map(nameOf).sort(), want, `${where}: latest after a new series`)
}

describe('selectors without a metric', () => {
  it('select across metrics on the basic engine, in the buffer, stored and after a restart', async () => {
    const dir = await tempDir('select')
    const clock = new ManualClock(T0 + HOUR)
    let engine = basicEngine(dir, clock)
    await engine.open()
    try {
      await writeSelectorSeries(engine, T0)
      await checkSelectors(engine, T0, 'basic engine, buffered')
      await engine.compact()
      await checkSelectors(engine, T0, 'basic engine, sealed')
      await engine.close()
      engine = basicEngine(dir, clock)
      await engine.open()
      await checkSelectors(engine, T0, 'basic engine, reopened')
      await checkNewSeriesShowUp(engine, T0, 'basic engine')
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('select across metrics on the memory engine', async () => {
    const engine = new MemoryEngine()
    await engine.open()
    await writeSelectorSeries(engine, T0)
    await checkSelectors(engine, T0, 'memory engine')
    await checkNewSeriesShowUp(engine, T0, 'memory engine')
    await engine.close()
  })

  it('are refused by a delete and a subscription, which would take every series', async () => {
    const dir = await tempDir('refuse')
    const basic = basicEngine(dir)
    const memory = new MemoryEngine()
    await basic.open()
    await memory.open()
    try {
      for (const engine of [basic, memory]) {
        await writeSelectorSeries(engine, T0)
        await assert.rejects(engine.deleteSeries({ selector: { metric: '', matchers: [] } }), (err) => {
          assert.deepEqual(fields(err), ['selector.metric'])
          return true
        })
        assert.throws(
          () => engine.subscribe({ metric: '', matchers: [m('__name__', 'eq', 'cpu')] }, () => {}),
          ValidationError,
        )
        assert.equal((await engine.listSeries({ metric: '', matchers: [] })).length, SELECTOR_SERIES.length)
      }
    } finally {
      await basic.close()
      await memory.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('still refuse a bad metric name, and bad matchers on __name__', async () => {
    const engine = new MemoryEngine()
    await engine.open()
    await assert.rejects(engine.listSeries({ metric: '9x', matchers: [] }), (err) => {
      assert.deepEqual(fields(err), ['selector.metric'])
      return true
    })
    await assert.rejects(engine.listSeries({ metric: '', matchers: [m('__name__', 'regex', '(')] }), (err) => {
      assert.deepEqual(fields(err), ['selector.matchers[0].value'])
      return true
    })
    await engine.close()
  })
})

describe('on a cluster of three nodes, two copies of each series', () => {
  const IDS = ['a', 'b', 'c'] as const
  let dir: string
  let cluster: MemoryCluster
  const node = (id: string): MemoryClusterNode => cluster.node(id)

  before(async () => {
    dir = await tempDir('cluster')
    cluster = await startMemoryCluster({
      dir,
      members: activeMembers(IDS),
      replicationFactor: 2,
      writeConsistency: 'all',
      readTimeoutMs: 5_000,
      // Every node refuses NaN in writes of its own clients (allowNaN false, the default).
      engine: { hotWindowMs: HOUR },
    })
  })

  after(async () => {
    await cluster?.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('answers selectors without a metric from every node, each series with its own metric', async () => {
    const at = T0 + 2 * HOUR
    await writeSelectorSeries(node('b').cluster, at)
    for (const n of cluster.nodes) await checkSelectors(n.cluster, at, `cluster, read on ${n.id}`)
    await checkNewSeriesShowUp(node('c').cluster, at, 'cluster')
    await assert.rejects(node('a').cluster.deleteSeries({ selector: { metric: '', matchers: [] } }), (err) => {
      assert.deepEqual(fields(err), ['selector.metric'])
      return true
    })
  })

  /** Metrics enough that every node holds some series and lacks others. */
  const METRICS = Array.from({ length: 8 }, (_, i) => `nan${i}`)

  it('stores NaN a coordinator accepted on every owner, and reads every bit pattern back from any node', async () => {
    await assert.rejects(node('a').cluster.write(one('nan0', [Number.NaN])), (err) => {
      assert.deepEqual(fields(err), ['series[0].values[0]'])
      return true
    })
    for (const metric of METRICS) await node('a').cluster.write(nanBatch(T0, metric))
    // Each series is on exactly its two owners, written there through the peer write or locally.
    for (const metric of METRICS) {
      for (const name of ['a', 'b']) {
        const selector = { metric, matchers: [m('s', 'eq', name)] }
        const holders = cluster.nodes.filter((n) => n.engine.index.select(selector).length === 1)
        assert.equal(holders.length, 2, `owners of ${metric}{s=${name}}`)
      }
    }
    const check = async (where: string): Promise<void> => {
      for (const n of cluster.nodes) {
        for (const consistency of ['one', 'all'] as const) {
          for (const metric of METRICS) {
            const request = { ...everything(T0), selector: { metric, matchers: [] } }
            const what = `${where}, read on ${n.id} at ${consistency}, ${metric}`
            assertNanSeries(await n.cluster.query(request, { consistency }), T0, what)
            assertNanLatest(await n.cluster.latest({ metric, matchers: [] }, { consistency }), T0, what)
          }
        }
      }
    }
    await check('buffered')
    await node('b').cluster.compact()
    await check('sealed')
    for (const n of cluster.nodes) {
      const both = await n.cluster.query(
        { selector: { metric: '', matchers: [m('__name__', 'regex', 'nan[01]')] }, startMs: T0, endMs: T0 + HOUR },
        { consistency: 'all' },
      )
      assert.deepEqual(
        both.map((s) => s.metric),
        ['nan0', 'nan0', 'nan1', 'nan1'],
      )
      for (const s of both) assert.deepEqual(bitsOf(s.values), [...PATTERNS[s.tags[0]!.value as 'a' | 'b']])
    }
  })

  it('repairs a copy with NaN values onto owners that refuse NaN from clients, bits and all', async () => {
    // A series that node a owns, written to a alone, as if the other owner had missed the write.
    const tags = Array.from({ length: 32 }, (_, i) => [{ key: 's', value: `r${i}` }]).find((t) =>
      node('a')
        .cluster.locate('rep', t)
        .some((owner) => owner.id === 'a'),
    )!
    const owners = node('a')
      .cluster.locate('rep', tags)
      .map((owner) => owner.id)
    const values = doubles([STALE_NAN, NORMAL_NAN, 0x7ff0000000000000n])
    const timestamps = [T0 + HOUR, T0 + HOUR + STEP_MS, T0 + HOUR + 2 * STEP_MS]
    await node('a').engine.write({ acceptNaN: true, series: [{ metric: 'rep', tags, timestamps, values }] })
    const report = await node('a').repair.repairCluster()
    assert.ok(
      report.nodes.some((n) => n.pointsSent + n.pointsReceived > 0),
      JSON.stringify(report.nodes),
    )
    for (const id of owners) {
      const got = await node(id).engine.query({
        selector: { metric: 'rep', matchers: [] },
        startMs: T0,
        endMs: T0 + 2 * HOUR,
      })
      assert.equal(got.length, 1, `the copy on ${id}`)
      assert.deepEqual(bitsOf(got[0]!.values), bitsOf(values), `the bits on ${id}`)
    }
  })
})
