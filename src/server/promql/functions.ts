import type { RangeFunction } from './ast.js'

/**
 * The range-vector functions over one series' samples in one window, computed as Prometheus 2.42
 * computes them (promql/functions.go): the same order of floating-point operations, so that the
 * results are the same doubles, not merely close.
 */

/** One window of one series: samples lo..hi-1 of ts/vs, stale markers already left out. */
export interface Window {
  readonly ts: Float64Array
  readonly vs: Float64Array
  readonly lo: number
  readonly hi: number
  /** The evaluation time, and the window's bounds in sample time: [rangeStartMs, rangeEndMs]. */
  readonly rangeStartMs: number
  readonly rangeEndMs: number
  readonly rangeMs: number
}

/** Neumaier's compensated summation step, as Prometheus' kahanSumInc. */
function kahanSumInc(inc: number, sum: number, c: number): [number, number] {
  const t = sum + inc
  const nc = Math.abs(sum) >= Math.abs(inc) ? c + (sum - t + inc) : c + (inc - t + sum)
  return [t, nc]
}

/** The rate of a counter or the change of a gauge, extrapolated to the window's bounds (extrapolatedRate). */
function extrapolatedRate(w: Window, isCounter: boolean, isRate: boolean): number | undefined {
  const n = w.hi - w.lo
  if (n < 2) return undefined
  const { ts, vs } = w
  const first = vs[w.lo]!
  const last = vs[w.hi - 1]!
  let result = last - first
  if (isCounter) {
    let prev = first
    for (let i = w.lo + 1; i < w.hi; i++) {
      const v = vs[i]!
      if (v < prev) result += prev
      prev = v
    }
  }
  let durationToStart = (ts[w.lo]! - w.rangeStartMs) / 1000
  const durationToEnd = (w.rangeEndMs - ts[w.hi - 1]!) / 1000
  const sampledInterval = (ts[w.hi - 1]! - ts[w.lo]!) / 1000
  const averageDurationBetweenSamples = sampledInterval / (n - 1)
  // A counter cannot go below zero: extrapolating backwards stops where it would reach zero.
  if (isCounter && result > 0 && first >= 0) {
    const durationToZero = sampledInterval * (first / result)
    if (durationToZero < durationToStart) durationToStart = durationToZero
  }
  const extrapolationThreshold = averageDurationBetweenSamples * 1.1
  let extrapolateToInterval = sampledInterval
  extrapolateToInterval +=
    durationToStart < extrapolationThreshold ? durationToStart : averageDurationBetweenSamples / 2
  extrapolateToInterval += durationToEnd < extrapolationThreshold ? durationToEnd : averageDurationBetweenSamples / 2
  let factor = extrapolateToInterval / sampledInterval
  if (isRate) factor /= w.rangeMs / 1000
  return result * factor
}

/**
 * irate: the per-second rate between the last two samples, a drop taken as a counter reset; idelta:
 * their difference (instantValue).
 */
function instantValue(w: Window, isRate: boolean): number | undefined {
  if (w.hi - w.lo < 2) return undefined
  const last = w.vs[w.hi - 1]!
  const previous = w.vs[w.hi - 2]!
  const result = isRate && last < previous ? last : last - previous
  const interval = w.ts[w.hi - 1]! - w.ts[w.hi - 2]!
  if (interval === 0) return undefined
  return isRate ? result / (interval / 1000) : result
}

/** How often the value changed (changes) or dropped (resets) from one sample to the next. */
function countSteps(w: Window, resets: boolean): number {
  let n = 0
  let prev = w.vs[w.lo]!
  for (let i = w.lo + 1; i < w.hi; i++) {
    const v = w.vs[i]!
    if (resets ? v < prev : v !== prev && !(Number.isNaN(v) && Number.isNaN(prev))) n++
    prev = v
  }
  return n
}

/** deriv: the slope of the least-squares line through the samples, per second (linearRegression). */
function deriv(w: Window): number | undefined {
  if (w.hi - w.lo < 2) return undefined
  const t0 = w.ts[w.lo]!
  const initY = w.vs[w.lo]!
  let constY = true
  let n = 0
  let sumX = 0
  let cX = 0
  let sumY = 0
  let cY = 0
  let sumXY = 0
  let cXY = 0
  let sumX2 = 0
  let cX2 = 0
  for (let i = w.lo; i < w.hi; i++) {
    const v = w.vs[i]!
    if (constY && i > w.lo && v !== initY) constY = false
    n += 1
    const x = (w.ts[i]! - t0) / 1e3
    ;[sumX, cX] = kahanSumInc(x, sumX, cX)
    ;[sumY, cY] = kahanSumInc(v, sumY, cY)
    ;[sumXY, cXY] = kahanSumInc(x * v, sumXY, cXY)
    ;[sumX2, cX2] = kahanSumInc(x * x, sumX2, cX2)
  }
  if (constY) return Number.isFinite(initY) || Number.isNaN(initY) ? 0 : Number.NaN
  sumX += cX
  sumY += cY
  sumXY += cXY
  sumX2 += cX2
  const covXY = sumXY - (sumX * sumY) / n
  const varX = sumX2 - (sumX * sumX) / n
  return covXY / varX
}

function avgOverTime(w: Window): number {
  let mean = 0
  let c = 0
  let count = 0
  for (let i = w.lo; i < w.hi; i++) {
    const v = w.vs[i]!
    count++
    if (!Number.isFinite(mean) && !Number.isNaN(mean)) {
      // An infinite mean stays as it is unless a NaN or an infinity of the other sign comes.
      if (!Number.isFinite(v) && !Number.isNaN(v) && mean > 0 === v > 0) continue
      if (Number.isFinite(v)) continue
    }
    ;[mean, c] = kahanSumInc(v / count - mean / count, mean, c)
  }
  return !Number.isFinite(mean) && !Number.isNaN(mean) ? mean : mean + c
}

function sumOverTime(w: Window): number {
  let sum = 0
  let c = 0
  for (let i = w.lo; i < w.hi; i++) [sum, c] = kahanSumInc(w.vs[i]!, sum, c)
  return !Number.isFinite(sum) && !Number.isNaN(sum) ? sum : sum + c
}

function minMaxOverTime(w: Window, max: boolean): number {
  let out = w.vs[w.lo]!
  for (let i = w.lo; i < w.hi; i++) {
    const v = w.vs[i]!
    if ((max ? v > out : v < out) || Number.isNaN(out)) out = v
  }
  return out
}

function stdvarOverTime(w: Window): number {
  let count = 0
  let mean = 0
  let cMean = 0
  let aux = 0
  let cAux = 0
  for (let i = w.lo; i < w.hi; i++) {
    const v = w.vs[i]!
    count++
    const delta = v - (mean + cMean)
    ;[mean, cMean] = kahanSumInc(delta / count, mean, cMean)
    ;[aux, cAux] = kahanSumInc(delta * (v - (mean + cMean)), aux, cAux)
  }
  return (aux + cAux) / count
}

/** Ascending, NaN first, as Prometheus' vectorByValueHeap orders. */
function compareValues(a: number, b: number): number {
  if (Number.isNaN(a)) return Number.isNaN(b) ? 0 : -1
  if (Number.isNaN(b)) return 1
  return a < b ? -1 : a > b ? 1 : 0
}

/** The q-quantile of values with linear interpolation between ranks (Prometheus' quantile). */
export function quantile(q: number, values: number[]): number {
  if (values.length === 0 || Number.isNaN(q)) return Number.NaN
  if (q < 0) return Number.NEGATIVE_INFINITY
  if (q > 1) return Number.POSITIVE_INFINITY
  values.sort(compareValues)
  const n = values.length
  const rank = q * (n - 1)
  const lower = Math.max(0, Math.floor(rank))
  const upper = Math.min(n - 1, lower + 1)
  const weight = rank - Math.floor(rank)
  return values[lower]! * (1 - weight) + values[upper]! * weight
}

/**
 * The value of a range function over one non-empty window, or undefined where Prometheus gives no
 * sample (rate and its kin with fewer than two samples). `param` is quantile_over_time's quantile.
 */
export function rangeFunction(func: RangeFunction, w: Window, param: number): number | undefined {
  switch (func) {
    case 'rate':
      return extrapolatedRate(w, true, true)
    case 'increase':
      return extrapolatedRate(w, true, false)
    case 'delta':
      return extrapolatedRate(w, false, false)
    case 'irate':
      return instantValue(w, true)
    case 'idelta':
      return instantValue(w, false)
    case 'changes':
      return countSteps(w, false)
    case 'resets':
      return countSteps(w, true)
    case 'deriv':
      return deriv(w)
    case 'avg_over_time':
      return avgOverTime(w)
    case 'sum_over_time':
      return sumOverTime(w)
    case 'min_over_time':
      return minMaxOverTime(w, false)
    case 'max_over_time':
      return minMaxOverTime(w, true)
    case 'count_over_time':
      return w.hi - w.lo
    case 'last_over_time':
      return w.vs[w.hi - 1]!
    case 'stddev_over_time':
      return Math.sqrt(stdvarOverTime(w))
    case 'stdvar_over_time':
      return stdvarOverTime(w)
    case 'present_over_time':
      return 1
    case 'quantile_over_time':
      return quantile(param, Array.from(w.vs.subarray(w.lo, w.hi)))
  }
}
