import type { CallContext, StorageEngine } from '../../engine/storage-engine.js'
import { firstAtLeast } from '../../model/timestamps.js'
import type { SeriesPoints } from '../../model/types.js'
import {
  type AggregateOp,
  type BinaryOp,
  type Expr,
  type InstantFunction,
  isComparison,
  isSetOp,
  METRIC_NAME,
  type RangeFunction,
  type SelectorNode,
} from './ast.js'
import { execution, PromQLError } from './errors.js'
import { quantile, rangeFunction } from './functions.js'

/**
 * Evaluates a PromQL syntax tree over a range of steps as Prometheus 2.42's engine does
 * (promql/engine.go): every node becomes a set of series with at most one value per step, the
 * selectors read each series once for the whole range, and the checks Prometheus makes while it
 * evaluates (one series per label set, one-to-one matching) fail the query the same way.
 */

export interface Label {
  readonly name: string
  readonly value: string
}

/** Labels sorted by name. */
export type Labels = readonly Label[]

/** A series with a value at some of the steps. */
export interface StepSeries {
  readonly labels: Labels
  readonly values: Float64Array
  /** 1 where the series has a value at that step. */
  readonly present: Uint8Array
}

export type StepValue =
  | { readonly type: 'scalar'; readonly values: Float64Array }
  | { readonly type: 'vector'; readonly series: StepSeries[] }

/** A selector's raw samples of one series, as an instant query of a range vector answers them. */
export interface RawSeries {
  readonly labels: Labels
  readonly ts: Float64Array
  readonly vs: Float64Array
}

/** The staleness marker Prometheus writes when a series ends: a NaN with these bits. */
const STALE_NAN_BITS = 0x7ff0000000000002n

/**
 * The most step values one evaluation may allocate: Prometheus' default --query.max-samples. It
 * counts every series at every step of every node, which is at least the samples Prometheus counts.
 */
const MAX_SAMPLES = 50_000_000

export interface EvalRange {
  readonly startMs: number
  readonly endMs: number
  readonly stepMs: number
  readonly lookbackMs: number
}

/** A selector's series, split for the two ways a selector reads them. */
interface Fetched {
  /** All samples, stale markers included, and which are stale: for instant selectors. */
  readonly raw: readonly {
    readonly labels: Labels
    readonly ts: Float64Array
    readonly vs: Float64Array
    readonly stale: Uint8Array
  }[]
  /** The samples without stale markers: for range selectors. */
  readonly fresh: readonly RawSeries[]
}

function labelsKey(labels: Labels): string {
  const flat: string[] = []
  for (const l of labels) flat.push(l.name, l.value)
  return JSON.stringify(flat)
}

export function compareLabels(a: Labels, b: Labels): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a[i]!
    const y = b[i]!
    if (x.name !== y.name) return x.name < y.name ? -1 : 1
    if (x.value !== y.value) return x.value < y.value ? -1 : 1
  }
  return a.length - b.length
}

function dropName(labels: Labels): Labels {
  return labels.some((l) => l.name === METRIC_NAME) ? labels.filter((l) => l.name !== METRIC_NAME) : labels
}

function labelsOf(series: SeriesPoints): Labels {
  const out: Label[] = [{ name: METRIC_NAME, value: series.metric }]
  for (const t of series.tags) out.push({ name: t.key, value: t.value })
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
}

function sameLabelsetError(): PromQLError {
  return execution('vector cannot contain metrics with the same labelset')
}

/**
 * x^y as Go's math.Pow computes it, which Prometheus' `^` is: the special cases of IEEE 754 and
 * Go, then x^frac(y) through exp and log, times x^int(y) by repeated squaring of x's mantissa with
 * the exponent kept apart, scaled once at the end. Integer powers come out bit for bit as
 * Prometheus' do; fractional ones go through exp, whose last bit differs between Go's (which
 * itself depends on the CPU) and JavaScript's.
 */
function goPow(x: number, y: number): number {
  if (y === 0 || x === 1) return 1
  if (y === 1) return x
  if (Number.isNaN(x) || Number.isNaN(y)) return Number.NaN
  const oddInt = (v: number): boolean => Number.isInteger(v) && Math.abs(v) < 2 ** 53 && Math.abs(v % 2) === 1
  if (x === 0) {
    const negative = Object.is(x, -0) && oddInt(y)
    if (y < 0) return negative ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY
    return negative ? x : 0
  }
  if (!Number.isFinite(y)) {
    if (x === -1) return 1
    return Math.abs(x) < 1 === y > 0 ? 0 : Number.POSITIVE_INFINITY
  }
  if (!Number.isFinite(x)) {
    if (x < 0) return goPow(1 / x, -y)
    return y < 0 ? 0 : Number.POSITIVE_INFINITY
  }
  if (y === 0.5) return Math.sqrt(x)
  if (y === -0.5) return 1 / Math.sqrt(x)
  let yi = Math.trunc(Math.abs(y))
  let yf = Math.abs(y) - yi
  if (yf !== 0 && x < 0) return Number.NaN
  if (yi >= 2 ** 63) {
    if (x === -1) return 1
    return Math.abs(x) < 1 === y > 0 ? 0 : Number.POSITIVE_INFINITY
  }
  let a1 = 1
  let ae = 0
  if (yf !== 0) {
    if (yf > 0.5) {
      yf--
      yi++
    }
    a1 = Math.exp(yf * goLog(x))
  }
  let [x1, xe] = frexp(x)
  for (let i = yi; i !== 0; i = Math.floor(i / 2)) {
    if (xe < -(1 << 12) || 1 << 12 < xe) {
      // Far out of range: the final scaling over- or underflows.
      ae += xe
      break
    }
    if (i % 2 === 1) {
      a1 *= x1
      ae += xe
    }
    x1 *= x1
    xe *= 2
    if (x1 < 0.5) {
      x1 += x1
      xe--
    }
  }
  if (y < 0) {
    a1 = 1 / a1
    ae = -ae
  }
  return ldexp(a1, ae)
}

/** frac × 2^exp rounded once, as Go's math.Ldexp: subnormal results scaled in two steps of which only the last rounds. */
function ldexp(frac: number, exp: number): number {
  if (frac === 0 || !Number.isFinite(frac) || Number.isNaN(frac)) return frac
  const [f, e] = frexp(frac)
  // f is in [0.5, 1): the result's binary exponent as an IEEE 754 double has it is e2 - 1.
  const e2 = e + exp
  if (e2 - 1 < -1075) return f < 0 ? -0 : 0
  if (e2 - 1 > 1023) return f < 0 ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY
  if (e2 - 1 < -1022) return f * 2 ** (e2 + 53) * 2 ** -53
  // 2f is in [1, 2): times a power of two that is itself a double, nothing rounds.
  return f * 2 * 2 ** (e2 - 1)
}

/** An operator's value and whether a comparison keeps the sample (vectorElemBinop). */
function binop(op: BinaryOp, l: number, r: number): [number, boolean] {
  switch (op) {
    case '+':
      return [l + r, true]
    case '-':
      return [l - r, true]
    case '*':
      return [l * r, true]
    case '/':
      return [l / r, true]
    case '%':
      return [l % r, true]
    case '^':
      return [goPow(l, r), true]
    case '==':
      return [l, l === r]
    case '!=':
      return [l, l !== r]
    case '>':
      return [l, l > r]
    case '<':
      return [l, l < r]
    case '>=':
      return [l, l >= r]
    case '<=':
      return [l, l <= r]
    case 'and':
    case 'or':
    case 'unless':
      throw new Error(`BUG: set operator ${op} applied to values`)
  }
}

/** Builds the output series of a node step by step, one series per label set. */
class SeriesBuilder {
  private readonly byKey = new Map<string, StepSeries>()
  private readonly keys = new Map<Labels, string>()
  /** The label sets written at the current step, to find two samples with one label set. */
  private stepKeys = new Set<string>()

  constructor(private readonly alloc: () => { values: Float64Array; present: Uint8Array }) {}

  nextStep(): void {
    this.stepKeys = new Set()
  }

  add(labels: Labels, step: number, value: number): void {
    // The same label arrays come back at every step: their keys are made once.
    let key = this.keys.get(labels)
    if (key === undefined) {
      key = labelsKey(labels)
      this.keys.set(labels, key)
    }
    if (this.stepKeys.has(key)) throw sameLabelsetError()
    this.stepKeys.add(key)
    let s = this.byKey.get(key)
    if (s === undefined) {
      s = { labels, ...this.alloc() }
      this.byKey.set(key, s)
    }
    s.values[step] = value
    s.present[step] = 1
  }

  series(): StepSeries[] {
    return [...this.byKey.values()]
  }
}

/** Fails when two series of a node have one label set, as Prometheus checks a whole matrix. */
function checkUnique(series: readonly StepSeries[]): void {
  const seen = new Set<string>()
  for (const s of series) {
    const key = labelsKey(s.labels)
    if (seen.has(key)) throw sameLabelsetError()
    seen.add(key)
  }
}

/** Go's container/heap over samples, with Prometheus' orders for topk (min on top) and bottomk (max on top). */
class SampleHeap {
  readonly items: { labels: Labels; value: number }[] = []

  constructor(private readonly top: boolean) {}

  private less(i: number, j: number): boolean {
    const a = this.items[i]!.value
    const b = this.items[j]!.value
    if (Number.isNaN(a)) return true
    return this.top ? a < b : a > b
  }

  private swap(i: number, j: number): void {
    const t = this.items[i]!
    this.items[i] = this.items[j]!
    this.items[j] = t
  }

  private up(j: number): void {
    while (j > 0) {
      const i = Math.floor((j - 1) / 2)
      if (!this.less(j, i)) break
      this.swap(i, j)
      j = i
    }
  }

  private down(i0: number, n: number): void {
    let i = i0
    for (;;) {
      const j1 = 2 * i + 1
      if (j1 >= n) break
      let j = j1
      const j2 = j1 + 1
      if (j2 < n && this.less(j2, j1)) j = j2
      if (!this.less(j, i)) break
      this.swap(i, j)
      i = j
    }
  }

  push(item: { labels: Labels; value: number }): void {
    this.items.push(item)
    this.up(this.items.length - 1)
  }

  pop(): void {
    const n = this.items.length - 1
    this.swap(0, n)
    this.down(0, n)
    this.items.pop()
  }
}

interface Group {
  readonly labels: Labels
  value: number
  mean: number
  count: number
  heap?: SampleHeap
  values?: number[]
}

export class Evaluator {
  readonly steps: number
  private readonly fetched = new Map<SelectorNode, Fetched>()
  /** Step values allocated so far, present or not. */
  private samples = 0

  constructor(
    private readonly engine: StorageEngine,
    private readonly range: EvalRange,
    private readonly signal: AbortSignal,
    private readonly maxSamples = MAX_SAMPLES,
  ) {
    this.steps = Math.floor((range.endMs - range.startMs) / range.stepMs) + 1
  }

  private time(step: number): number {
    return this.range.startMs + step * this.range.stepMs
  }

  /**
   * The values of one more series at every step, counted against the samples a query may hold,
   * as Prometheus bounds them (--query.max-samples).
   */
  private series(): { values: Float64Array; present: Uint8Array } {
    this.samples += this.steps
    if (this.samples > this.maxSamples) {
      throw execution('query processing would load too many samples into memory in query execution')
    }
    return { values: new Float64Array(this.steps), present: new Uint8Array(this.steps) }
  }

  private checkAbort(): void {
    if (this.signal.aborted) throw new PromQLError('canceled', 'query was canceled in expression evaluation')
  }

  /** Reads every selector of the query once, for the whole range it needs. */
  async fetch(expr: Expr): Promise<void> {
    const wanted: { sel: SelectorNode; backMs: number }[] = []
    const walk = (e: Expr): void => {
      switch (e.kind) {
        case 'vector':
          wanted.push({ sel: e.sel, backMs: this.range.lookbackMs })
          return
        case 'matrix':
          wanted.push({ sel: e.sel, backMs: e.rangeMs })
          return
        case 'call':
          wanted.push({ sel: e.range.sel, backMs: e.range.rangeMs })
          if (e.param) walk(e.param)
          return
        case 'aggregate':
          if (e.param) walk(e.param)
          walk(e.expr)
          return
        case 'binary':
          walk(e.lhs)
          walk(e.rhs)
          return
        case 'negate':
          walk(e.expr)
          return
        case 'function':
          for (const a of e.args) walk(a)
          return
        case 'number':
          return
      }
    }
    walk(expr)
    const ctx: CallContext = { signal: this.signal }
    await Promise.all(
      wanted.map(async ({ sel, backMs }) => {
        const startMs = this.range.startMs - sel.offsetMs - backMs
        // The engine's end is exclusive; the selector's last instant is included.
        const endMs = this.range.endMs - sel.offsetMs + 1
        const points = await this.engine.query({ selector: sel.selector, startMs, endMs }, ctx)
        this.fetched.set(sel, split(points))
      }),
    )
    this.checkAbort()
  }

  private data(sel: SelectorNode): Fetched {
    const f = this.fetched.get(sel)
    if (f === undefined) throw new Error('BUG: selector evaluated before it was fetched')
    return f
  }

  /** The raw samples of a range selector at the first step: what an instant query of `x[5m]` answers. */
  matrix(sel: SelectorNode, rangeMs: number): RawSeries[] {
    const maxT = this.range.startMs - sel.offsetMs
    const minT = maxT - rangeMs
    const out: RawSeries[] = []
    for (const s of this.data(sel).fresh) {
      const lo = firstAtLeast(s.ts, 0, minT)
      const hi = firstAtLeast(s.ts, lo, maxT + 1)
      if (hi > lo) out.push({ labels: s.labels, ts: s.ts.slice(lo, hi), vs: s.vs.slice(lo, hi) })
    }
    return out
  }

  eval(e: Expr): StepValue {
    this.checkAbort()
    switch (e.kind) {
      case 'number':
        return { type: 'scalar', values: new Float64Array(this.steps).fill(e.value) }
      case 'vector':
        return { type: 'vector', series: this.vectorSelector(e.sel) }
      case 'matrix':
        throw new Error('BUG: a range vector evaluated as an instant value')
      case 'call':
        return { type: 'vector', series: this.call(e.func, e.range.sel, e.range.rangeMs, e.param) }
      case 'aggregate':
        return { type: 'vector', series: this.aggregate(e.op, e.grouping, e.without, e.expr, e.param) }
      case 'binary':
        return this.binary(e.op, e.lhs, e.rhs, e.returnBool, e.matching)
      case 'negate':
        return this.negate(this.eval(e.expr))
      case 'function':
        return this.instantFunction(e.func, e.args)
    }
  }

  private vectorSelector(sel: SelectorNode): StepSeries[] {
    const out: StepSeries[] = []
    for (const s of this.data(sel).raw) {
      this.checkAbort()
      const { values, present } = this.series()
      let any = false
      // The newest sample at or before each step: the steps only move forward, so does j.
      let j = -1
      for (let step = 0; step < this.steps; step++) {
        const refT = this.time(step) - sel.offsetMs
        while (j + 1 < s.ts.length && s.ts[j + 1]! <= refT) j++
        if (j < 0 || s.ts[j]! < refT - this.range.lookbackMs || s.stale[j] === 1) continue
        values[step] = s.vs[j]!
        present[step] = 1
        any = true
      }
      if (any) out.push({ labels: s.labels, values, present })
    }
    return out
  }

  private call(func: RangeFunction, sel: SelectorNode, rangeMs: number, paramExpr: Expr | undefined): StepSeries[] {
    const param = paramExpr ? this.scalar(paramExpr) : undefined
    const out: StepSeries[] = []
    for (const s of this.data(sel).fresh) {
      this.checkAbort()
      const { values, present } = this.series()
      let any = false
      let lo = 0
      let hi = 0
      for (let step = 0; step < this.steps; step++) {
        const rangeEndMs = this.time(step) - sel.offsetMs
        const rangeStartMs = rangeEndMs - rangeMs
        lo = firstAtLeast(s.ts, lo, rangeStartMs)
        hi = firstAtLeast(s.ts, Math.max(hi, lo), rangeEndMs + 1)
        if (hi === lo) continue
        const v = rangeFunction(
          func,
          { ts: s.ts, vs: s.vs, lo, hi, rangeStartMs, rangeEndMs, rangeMs },
          param ? param[step]! : 0,
        )
        if (v === undefined) continue
        values[step] = v
        present[step] = 1
        any = true
      }
      // last_over_time acts like an offset and keeps the metric name; the other functions drop it.
      const labels = func === 'last_over_time' ? s.labels : dropName(s.labels)
      if (any) out.push({ labels, values, present })
    }
    checkUnique(out)
    return out
  }

  private scalar(e: Expr): Float64Array {
    const v = this.eval(e)
    if (v.type !== 'scalar') throw new Error('BUG: a scalar parameter evaluated to a vector')
    return v.values
  }

  private vector(e: Expr): StepSeries[] {
    const v = this.eval(e)
    if (v.type !== 'vector') throw new Error('BUG: an instant vector evaluated to a scalar')
    return v.series
  }

  private aggregate(
    op: AggregateOp,
    grouping: readonly string[],
    without: boolean,
    inner: Expr,
    paramExpr: Expr | undefined,
  ): StepSeries[] {
    const param = paramExpr ? this.scalar(paramExpr) : undefined
    // Prometheus feeds the series in storage order, sorted by labels; topk's ties depend on it.
    const input = [...this.vector(inner)].sort((a, b) => compareLabels(a.labels, b.labels))
    const keep = new Set(grouping)
    const groupLabels = input.map((s) =>
      without
        ? s.labels.filter((l) => !keep.has(l.name) && l.name !== METRIC_NAME)
        : s.labels.filter((l) => keep.has(l.name)),
    )
    const groupKeys = groupLabels.map(labelsKey)
    const builder = new SeriesBuilder(() => this.series())
    for (let step = 0; step < this.steps; step++) {
      if (step % 256 === 0) this.checkAbort()
      builder.nextStep()
      let k = 0
      if (op === 'topk' || op === 'bottomk') {
        const f = param![step]!
        if (!(f <= 9.223372036854776e18 && f >= -9.223372036854776e18)) {
          throw execution(`Scalar value ${f} overflows int64`)
        }
        k = Math.trunc(f)
        if (k < 1) continue
      }
      const groups = new Map<string, Group>()
      const ordered: Group[] = []
      for (let i = 0; i < input.length; i++) {
        const s = input[i]!
        if (s.present[step] !== 1) continue
        const v = s.values[step]!
        const key = groupKeys[i]!
        const group = groups.get(key)
        if (group === undefined) {
          const g: Group = { labels: groupLabels[i]!, value: v, mean: v, count: 1 }
          if (op === 'stddev' || op === 'stdvar') g.value = 0
          if (op === 'topk' || op === 'bottomk') {
            g.heap = new SampleHeap(op === 'topk')
            g.heap.items.push({ labels: s.labels, value: v })
          }
          if (op === 'quantile') g.values = [v]
          groups.set(key, g)
          ordered.push(g)
          continue
        }
        accumulate(op, group, s.labels, v, k)
      }
      for (const g of ordered) {
        if (op === 'topk' || op === 'bottomk') {
          for (const item of g.heap!.items) builder.add(item.labels, step, item.value)
          continue
        }
        builder.add(g.labels, step, result(op, g, param ? param[step]! : 0))
      }
    }
    return builder.series()
  }

  private binary(
    op: BinaryOp,
    lhsExpr: Expr,
    rhsExpr: Expr,
    returnBool: boolean,
    matching: { readonly on: boolean; readonly labels: readonly string[] } | undefined,
  ): StepValue {
    const lhs = this.eval(lhsExpr)
    const rhs = this.eval(rhsExpr)
    if (lhs.type === 'scalar' && rhs.type === 'scalar') {
      const values = new Float64Array(this.steps)
      for (let i = 0; i < this.steps; i++) {
        const [v, keep] = binop(op, lhs.values[i]!, rhs.values[i]!)
        values[i] = isComparison(op) ? (keep ? 1 : 0) : v
      }
      return { type: 'scalar', values }
    }
    if (lhs.type === 'vector' && rhs.type === 'vector') {
      const series = isSetOp(op)
        ? this.vectorSetOp(op, lhs.series, rhs.series, matching!)
        : this.vectorBinop(op, lhs.series, rhs.series, returnBool, matching!)
      return { type: 'vector', series }
    }
    const swap = lhs.type === 'scalar'
    const vector = lhs.type === 'vector' ? lhs.series : rhs.type === 'vector' ? rhs.series : []
    const scalar = lhs.type === 'scalar' ? lhs.values : rhs.type === 'scalar' ? rhs.values : new Float64Array()
    const comparison = isComparison(op)
    const builder = new SeriesBuilder(() => this.series())
    const outLabels = vector.map((s) => (comparison && !returnBool ? s.labels : dropName(s.labels)))
    for (let step = 0; step < this.steps; step++) {
      builder.nextStep()
      for (let i = 0; i < vector.length; i++) {
        const s = vector[i]!
        if (s.present[step] !== 1) continue
        const sv = s.values[step]!
        const [l, r] = swap ? [scalar[step]!, sv] : [sv, scalar[step]!]
        let [value, keep] = binop(op, l, r)
        // A comparison keeps the vector's value, whichever side the vector is on.
        if (comparison && swap) value = r
        if (returnBool) {
          value = keep ? 1 : 0
          keep = true
        }
        if (keep) builder.add(outLabels[i]!, step, value)
      }
    }
    return { type: 'vector', series: builder.series() }
  }

  /** and, or, unless: samples of either side kept whole, by whether their match group is on the other side. */
  private vectorSetOp(
    op: 'and' | 'or' | 'unless',
    lhs: StepSeries[],
    rhs: StepSeries[],
    matching: { readonly on: boolean; readonly labels: readonly string[] },
  ): StepSeries[] {
    const signature = signatureOf(matching)
    const lhsSigs = lhs.map((s) => signature(s.labels))
    const rhsSigs = rhs.map((s) => signature(s.labels))
    const builder = new SeriesBuilder(() => this.series())
    for (let step = 0; step < this.steps; step++) {
      if (step % 256 === 0) this.checkAbort()
      builder.nextStep()
      const left = new Set<string>()
      for (let i = 0; i < lhs.length; i++) if (lhs[i]!.present[step] === 1) left.add(lhsSigs[i]!)
      const right = new Set<string>()
      for (let i = 0; i < rhs.length; i++) if (rhs[i]!.present[step] === 1) right.add(rhsSigs[i]!)
      for (let i = 0; i < lhs.length; i++) {
        const s = lhs[i]!
        if (s.present[step] !== 1) continue
        const matched = right.has(lhsSigs[i]!)
        if (op === 'or' || (op === 'and' ? matched : !matched)) builder.add(s.labels, step, s.values[step]!)
      }
      if (op !== 'or') continue
      for (let i = 0; i < rhs.length; i++) {
        const s = rhs[i]!
        if (s.present[step] === 1 && !left.has(rhsSigs[i]!)) builder.add(s.labels, step, s.values[step]!)
      }
    }
    return builder.series()
  }

  private vectorBinop(
    op: BinaryOp,
    lhs: StepSeries[],
    rhs: StepSeries[],
    returnBool: boolean,
    matching: { readonly on: boolean; readonly labels: readonly string[] },
  ): StepSeries[] {
    const names = new Set(matching.labels)
    const signature = signatureOf(matching)
    const lhsSigs = lhs.map((s) => signature(s.labels))
    const rhsSigs = rhs.map((s) => signature(s.labels))
    const comparison = isComparison(op)
    const outLabels = (labels: Labels): Labels => {
      let out = comparison ? labels : dropName(labels)
      out = matching.on ? out.filter((l) => names.has(l.name)) : out.filter((l) => !names.has(l.name))
      return returnBool ? dropName(out) : out
    }
    const lhsOut = lhs.map((s) => outLabels(s.labels))
    const builder = new SeriesBuilder(() => this.series())
    for (let step = 0; step < this.steps; step++) {
      if (step % 256 === 0) this.checkAbort()
      builder.nextStep()
      const right = new Map<string, StepSeries>()
      let anyLeft = false
      for (const s of lhs) if (s.present[step] === 1) anyLeft = true
      if (!anyLeft) continue
      for (let i = 0; i < rhs.length; i++) {
        const s = rhs[i]!
        if (s.present[step] !== 1) continue
        const sig = rhsSigs[i]!
        const dup = right.get(sig)
        if (dup !== undefined) {
          throw execution(
            `found duplicate series for the match group ${formatMatchGroup(s.labels, matching, names)} on the right hand-side of the operation: [${formatLabels(s.labels)}, ${formatLabels(dup.labels)}];many-to-many matching not allowed: matching labels must be unique on one side`,
          )
        }
        right.set(sig, s)
      }
      if (right.size === 0) continue
      const matched = new Set<string>()
      for (let i = 0; i < lhs.length; i++) {
        const s = lhs[i]!
        if (s.present[step] !== 1) continue
        const sig = lhsSigs[i]!
        const r = right.get(sig)
        if (r === undefined) continue
        let [value, keep] = binop(op, s.values[step]!, r.values[step]!)
        if (returnBool) {
          value = keep ? 1 : 0
        } else if (!keep) continue
        if (matched.has(sig)) {
          throw execution('multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)')
        }
        matched.add(sig)
        builder.add(lhsOut[i]!, step, value)
      }
    }
    return builder.series()
  }

  private instantFunction(func: InstantFunction, args: readonly Expr[]): StepValue {
    switch (func) {
      case 'time': {
        const values = new Float64Array(this.steps)
        for (let i = 0; i < this.steps; i++) values[i] = this.time(i) / 1000
        return { type: 'scalar', values }
      }
      case 'vector': {
        const { values, present } = this.series()
        values.set(this.scalar(args[0]!))
        present.fill(1)
        return { type: 'vector', series: [{ labels: [], values, present }] }
      }
      case 'scalar': {
        // One sample at a step gives its value; none or several give NaN.
        const input = this.vector(args[0]!)
        const values = new Float64Array(this.steps)
        for (let i = 0; i < this.steps; i++) {
          let n = 0
          let v = Number.NaN
          for (const s of input) {
            if (s.present[i] !== 1) continue
            n++
            v = s.values[i]!
          }
          values[i] = n === 1 ? v : Number.NaN
        }
        return { type: 'scalar', values }
      }
      case 'histogram_quantile':
        return { type: 'vector', series: this.histogramQuantile(this.scalar(args[0]!), this.vector(args[1]!)) }
      default:
        return { type: 'vector', series: this.mathFunction(func, args) }
    }
  }

  /** A function of each sample's value; the metric name is dropped (simpleFunc, round, clamp). */
  private mathFunction(func: InstantFunction, args: readonly Expr[]): StepSeries[] {
    const input = this.vector(args[0]!)
    const p1 = args[1] ? this.scalar(args[1]) : undefined
    const p2 = args[2] ? this.scalar(args[2]) : undefined
    const builder = new SeriesBuilder(() => this.series())
    const outLabels = input.map((s) => dropName(s.labels))
    for (let step = 0; step < this.steps; step++) {
      builder.nextStep()
      // clamp with its maximum below its minimum gives nothing at that step.
      if (func === 'clamp' && p2![step]! < p1![step]!) continue
      for (let i = 0; i < input.length; i++) {
        const s = input[i]!
        if (s.present[step] !== 1) continue
        builder.add(outLabels[i]!, step, mathValue(func, s.values[step]!, p1?.[step], p2?.[step]))
      }
    }
    return builder.series()
  }

  /**
   * histogram_quantile over classic histograms: the buckets of a series are the samples that
   * differ only in `le`; the result drops the name and `le` (bucketQuantile).
   */
  private histogramQuantile(q: Float64Array, input: StepSeries[]): StepSeries[] {
    const withoutLe = input.map((s) => s.labels.filter((l) => l.name !== BUCKET_LABEL))
    const signatures = withoutLe.map(labelsKey)
    const outLabels = withoutLe.map(dropName)
    const bounds = input.map((s) => parseGoFloat(s.labels.find((l) => l.name === BUCKET_LABEL)?.value ?? ''))
    const builder = new SeriesBuilder(() => this.series())
    for (let step = 0; step < this.steps; step++) {
      builder.nextStep()
      const groups = new Map<string, { labels: Labels; buckets: { upperBound: number; count: number }[] }>()
      for (let i = 0; i < input.length; i++) {
        const s = input[i]!
        const upperBound = bounds[i]!
        // A series without a readable le is no bucket: left out, as Prometheus does.
        if (s.present[step] !== 1 || upperBound === undefined) continue
        let g = groups.get(signatures[i]!)
        if (g === undefined) {
          g = { labels: outLabels[i]!, buckets: [] }
          groups.set(signatures[i]!, g)
        }
        g.buckets.push({ upperBound, count: s.values[step]! })
      }
      for (const g of groups.values()) builder.add(g.labels, step, bucketQuantile(q[step]!, g.buckets))
    }
    return builder.series()
  }

  private negate(v: StepValue): StepValue {
    if (v.type === 'scalar') return { type: 'scalar', values: v.values.map((x) => -x) }
    const series = v.series.map((s) => ({
      labels: dropName(s.labels),
      values: s.values.map((x) => -x),
      present: s.present,
    }))
    checkUnique(series)
    return { type: 'vector', series }
  }
}

/** The match group of a series: its labels named by on(…), or all but those of ignoring(…) and the name. */
function signatureOf(matching: {
  readonly on: boolean
  readonly labels: readonly string[]
}): (labels: Labels) => string {
  const names = new Set(matching.labels)
  return (labels) =>
    labelsKey(
      matching.on
        ? labels.filter((l) => names.has(l.name))
        : labels.filter((l) => !names.has(l.name) && l.name !== METRIC_NAME),
    )
}

/** One sample's value through a math function; p1 and p2 are the scalar arguments. */
function mathValue(func: InstantFunction, v: number, p1: number | undefined, p2: number | undefined): number {
  switch (func) {
    case 'abs':
      return Math.abs(v)
    case 'ceil':
      return Math.ceil(v)
    case 'floor':
      return Math.floor(v)
    case 'sqrt':
      return Math.sqrt(v)
    case 'ln':
      return goLog(v)
    case 'log2':
      return goLog2(v)
    case 'log10':
      // As Go: the natural logarithm times 1/ln 10, which differs from Math.log10 in the last bit.
      return goLog(v) * Math.LOG10E
    case 'sgn':
      return v < 0 ? -1 : v > 0 ? 1 : v
    case 'round': {
      // Ties round up; the inverse of to_nearest is what Prometheus multiplies by.
      const inverse = 1 / (p1 ?? 1)
      return Math.floor(v * inverse + 0.5) / inverse
    }
    case 'clamp':
      return Math.max(p1!, Math.min(p2!, v))
    case 'clamp_min':
      return Math.max(p1!, v)
    case 'clamp_max':
      return Math.min(p1!, v)
    default:
      throw new Error(`BUG: ${func} is not a math function`)
  }
}

/**
 * Go's math.Log2, which differs from JavaScript's in the last bit: the natural logarithm of the
 * fraction in [0.5, 1) scaled by 1/ln 2, plus the binary exponent; powers of two exact.
 */
function goLog2(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return Math.log2(x)
  const [frac, exp] = frexp(x)
  if (frac === 0.5) return exp - 1
  return goLog(frac) * Math.LOG2E + exp
}

/**
 * The natural logarithm as Go's math.Log computes it (FreeBSD's e_log.c, in Go's own operation
 * order): Math.log differs from it in the last bit for some inputs, and ln, log2, log10 and the
 * powers with a fractional exponent answer as Prometheus does only with Go's.
 */
export function goLog(x: number): number {
  if (Number.isNaN(x) || x === Number.POSITIVE_INFINITY) return x
  if (x < 0) return Number.NaN
  if (x === 0) return Number.NEGATIVE_INFINITY
  let [f1, ki] = frexp(x)
  if (f1 < Math.SQRT2 / 2) {
    f1 *= 2
    ki--
  }
  const f = f1 - 1
  const k = ki
  const s = f / (2 + f)
  const s2 = s * s
  const s4 = s2 * s2
  const t1 = s2 * (LOG_L1 + s4 * (LOG_L3 + s4 * (LOG_L5 + s4 * LOG_L7)))
  const t2 = s4 * (LOG_L2 + s4 * (LOG_L4 + s4 * LOG_L6))
  const r = t1 + t2
  const hfsq = 0.5 * f * f
  return k * LN2_HI - (hfsq - (s * (hfsq + r) + k * LN2_LO) - f)
}

// Go's constants, written as the shortest decimals of the same doubles.
const LN2_HI = 0.6931471803691238
const LN2_LO = 1.9082149292705877e-10
const LOG_L1 = 0.6666666666666735
const LOG_L2 = 0.3999999999940942
const LOG_L3 = 0.2857142874366239
const LOG_L4 = 0.22222198432149784
const LOG_L5 = 0.1818357216161805
const LOG_L6 = 0.15313837699209373
const LOG_L7 = 0.14798198605116586

/** x as frac × 2^exp with |frac| in [0.5, 1), for finite non-zero x (Go's math.Frexp). */
function frexp(x: number): [number, number] {
  const view = new DataView(new ArrayBuffer(8))
  let scale = 0
  let v = x
  // Subnormals are normalized first.
  if (Math.abs(v) < 2.2250738585072014e-308) {
    v *= 2 ** 52
    scale = -52
  }
  view.setFloat64(0, v)
  const hi = view.getUint32(0)
  const exp = ((hi >>> 20) & 0x7ff) - 1022 + scale
  view.setUint32(0, (hi & 0x800fffff) | (1022 << 20))
  return [view.getFloat64(0), exp]
}

/** The label of a classic histogram's bucket bound. */
const BUCKET_LABEL = 'le'

/** A float as Go's strconv.ParseFloat reads a bucket bound; undefined where it fails. */
function parseGoFloat(text: string): number | undefined {
  if (/^[+-]?(?:inf|infinity)$/i.test(text))
    return text.startsWith('-') ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY
  if (/^nan$/i.test(text)) return Number.NaN
  if (/^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/.test(text)) return Number(text)
  return undefined
}

/** The q-quantile of a classic histogram, interpolated linearly within its bucket (bucketQuantile). */
function bucketQuantile(q: number, unsorted: { upperBound: number; count: number }[]): number {
  if (Number.isNaN(q)) return Number.NaN
  if (q < 0) return Number.NEGATIVE_INFINITY
  if (q > 1) return Number.POSITIVE_INFINITY
  const sorted = [...unsorted].sort((a, b) => a.upperBound - b.upperBound)
  if (sorted[sorted.length - 1]!.upperBound !== Number.POSITIVE_INFINITY) return Number.NaN
  // Buckets with one bound are added up; counts are made to grow with the bounds.
  const buckets: { upperBound: number; count: number }[] = []
  for (const b of sorted) {
    const last = buckets[buckets.length - 1]
    if (last !== undefined && last.upperBound === b.upperBound) last.count += b.count
    else buckets.push({ ...b })
  }
  let max = buckets[0]!.count
  for (let i = 1; i < buckets.length; i++) {
    const b = buckets[i]!
    if (b.count > max) max = b.count
    else if (b.count < max) b.count = max
  }
  if (buckets.length < 2) return Number.NaN
  const observations = buckets[buckets.length - 1]!.count
  if (observations === 0) return Number.NaN
  let rank = q * observations
  // The first bucket (the last left out) whose count reaches the rank.
  let b = buckets.length - 1
  for (let i = 0; i < buckets.length - 1; i++) {
    if (buckets[i]!.count >= rank) {
      b = i
      break
    }
  }
  if (b === buckets.length - 1) return buckets[buckets.length - 2]!.upperBound
  if (b === 0 && buckets[0]!.upperBound <= 0) return buckets[0]!.upperBound
  let bucketStart = 0
  const bucketEnd = buckets[b]!.upperBound
  let count = buckets[b]!.count
  if (b > 0) {
    bucketStart = buckets[b - 1]!.upperBound
    count -= buckets[b - 1]!.count
    rank -= buckets[b - 1]!.count
  }
  return bucketStart + (bucketEnd - bucketStart) * (rank / count)
}

/** Adds one more sample to its group (the loop of Prometheus' aggregation). */
function accumulate(op: AggregateOp, g: Group, labels: Labels, v: number, k: number): void {
  switch (op) {
    case 'sum':
      g.value += v
      return
    case 'avg':
      g.count++
      if (!Number.isFinite(g.mean) && !Number.isNaN(g.mean)) {
        // An infinite mean stays as it is unless a NaN or an infinity of the other sign comes.
        if (!Number.isFinite(v) && !Number.isNaN(v) && g.mean > 0 === v > 0) return
        if (Number.isFinite(v)) return
      }
      g.mean += v / g.count - g.mean / g.count
      return
    case 'max':
      if (g.value < v || Number.isNaN(g.value)) g.value = v
      return
    case 'min':
      if (g.value > v || Number.isNaN(g.value)) g.value = v
      return
    case 'count':
      g.count++
      return
    case 'stddev':
    case 'stdvar': {
      g.count++
      const delta = v - g.mean
      g.mean += delta / g.count
      g.value += delta * (v - g.mean)
      return
    }
    case 'topk':
    case 'bottomk': {
      const heap = g.heap!
      const top = heap.items[0]!.value
      const better = op === 'topk' ? top < v : top > v
      if (heap.items.length < k || better || Number.isNaN(top)) {
        if (heap.items.length === k) {
          if (k === 1) {
            heap.items[0] = { labels, value: v }
            return
          }
          heap.pop()
        }
        heap.push({ labels, value: v })
      }
      return
    }
    case 'quantile':
      g.values!.push(v)
      return
  }
}

/** A group's value once every sample is in. */
function result(op: AggregateOp, g: Group, param: number): number {
  switch (op) {
    case 'avg':
      return g.mean
    case 'count':
      return g.count
    case 'stdvar':
      return g.value / g.count
    case 'stddev':
      return Math.sqrt(g.value / g.count)
    case 'quantile':
      return quantile(param, g.values!)
    default:
      return g.value
  }
}

function formatLabels(labels: Labels): string {
  return `{${labels.map((l) => `${l.name}=${JSON.stringify(l.value)}`).join(', ')}}`
}

function formatMatchGroup(labels: Labels, matching: { readonly on: boolean }, names: ReadonlySet<string>): string {
  return formatLabels(labels.filter((l) => (matching.on ? names.has(l.name) : !names.has(l.name))))
}

/** A query's series with their labels, stale markers found by their bits and kept apart for range selectors. */
function split(points: readonly SeriesPoints[]): Fetched {
  const raw: Fetched['raw'][number][] = []
  const fresh: RawSeries[] = []
  for (const p of points) {
    const labels = labelsOf(p)
    const bits = new BigUint64Array(p.values.buffer, p.values.byteOffset, p.values.length)
    const stale = new Uint8Array(p.values.length)
    let staleCount = 0
    for (let i = 0; i < bits.length; i++) {
      if (bits[i] === STALE_NAN_BITS) {
        stale[i] = 1
        staleCount++
      }
    }
    raw.push({ labels, ts: p.timestamps, vs: p.values, stale })
    if (staleCount === 0) {
      fresh.push({ labels, ts: p.timestamps, vs: p.values })
      continue
    }
    const ts = new Float64Array(p.values.length - staleCount)
    const vs = new Float64Array(ts.length)
    let n = 0
    for (let i = 0; i < stale.length; i++) {
      if (stale[i] === 1) continue
      ts[n] = p.timestamps[i]!
      vs[n] = p.values[i]!
      n++
    }
    fresh.push({ labels, ts, vs })
  }
  return { raw, fresh }
}
