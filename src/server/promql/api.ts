import type { StorageEngine } from '../../engine/storage-engine.js'
import { DeadlineError, LimitError, UnavailableError, ValidationError } from '../../model/errors.js'
import { nameViolation } from '../../model/series-key.js'
import { MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, parseRfc3339 } from '../../model/timestamps.js'
import type { Selector, SeriesRef } from '../../model/types.js'
import { METRIC_NAME, type ParsedQuery, parseDurationMs, parsePromQL, parseSeriesSelector } from './ast.js'
import { badData, PromQLError } from './errors.js'
import { compareLabels, Evaluator, type Labels, type StepSeries } from './eval.js'
import { formatTime, formatValue } from './format.js'

/**
 * The Prometheus HTTP query API (web/api/v1 of Prometheus 2.42) over a StorageEngine: instant and
 * range queries in PromQL, series, label names and values, build info. Parameters, JSON shapes,
 * error types and HTTP statuses are Prometheus' own, so that Grafana's Prometheus data source and
 * other clients of that API work unchanged.
 */

export interface PromHttpAnswer {
  readonly status: number
  /** JSON text. */
  readonly body: string
}

export interface PromQueryApiOptions {
  /** How far back an instant selector looks for a sample; default 300,000, Prometheus' 5 m staleness. */
  readonly lookbackDeltaMs?: number
  /** The version /api/v1/status/buildinfo reports. */
  readonly version: string
}

/** Prometheus' default query timeout (--query.timeout), for a request that names none. */
const DEFAULT_TIMEOUT_MS = 120_000

/** The most steps a range query may have per series, as Prometheus limits it. */
const MAX_POINTS_PER_SERIES = 11_000

const FLOAT_RE = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/

/** Go's math.Round: halves away from zero. */
function roundHalfAway(x: number): number {
  return Math.sign(x) * Math.round(Math.abs(x))
}

/**
 * The first and last times of Prometheus' API as its clients write them (minTime and maxTime in
 * web/api/v1): "from the beginning" and "to the end" of a series or label listing.
 */
const PROMETHEUS_MIN_TIME = '-292273086-05-16T16:47:06Z'
const PROMETHEUS_MAX_TIME = '292277025-08-18T07:12:54.999999999Z'

/**
 * A time parameter as Prometheus takes it: unix seconds with a fraction, or RFC 3339; in
 * milliseconds. A time past ±(2^53 − 1) ms, where no sample can lie, is taken as that bound, as are
 * Prometheus' own first and last times.
 */
export function parseTimeParam(text: string, name: string): number {
  if (text === PROMETHEUS_MIN_TIME) return Number.MIN_SAFE_INTEGER
  if (text === PROMETHEUS_MAX_TIME) return Number.MAX_SAFE_INTEGER
  if (FLOAT_RE.test(text)) {
    const t = Number(text)
    const whole = Math.trunc(t)
    const ms = whole * 1000 + roundHalfAway((t - whole) * 1000)
    if (Number.isFinite(ms)) return Math.min(Math.max(ms, Number.MIN_SAFE_INTEGER), Number.MAX_SAFE_INTEGER)
  }
  const ms = parseRfc3339(text)
  if (!Number.isNaN(ms)) return ms
  throw badData(`invalid parameter ${JSON.stringify(name)}: cannot parse ${JSON.stringify(text)} to a valid timestamp`)
}

/** A duration parameter: float seconds or a duration such as 1m30s; in milliseconds, truncated as Prometheus does. */
export function parseDurationParam(text: string, name: string): number {
  if (FLOAT_RE.test(text)) return Math.trunc(Math.trunc(Number(text) * 1e9) / 1e6)
  const ms = parseDurationMs(text)
  if (ms !== undefined) return ms
  throw badData(`invalid parameter ${JSON.stringify(name)}: cannot parse ${JSON.stringify(text)} to a valid duration`)
}

function success(data: unknown): PromHttpAnswer {
  return { status: 200, body: JSON.stringify({ status: 'success', data }) }
}

function failure(err: PromQLError): PromHttpAnswer {
  return { status: err.status, body: JSON.stringify({ status: 'error', errorType: err.type, error: err.message }) }
}

function metricObject(labels: Labels): Record<string, string> {
  const out: Record<string, string> = {}
  for (const l of labels) out[l.name] = l.value
  return out
}

function refLabels(ref: SeriesRef): Record<string, string> {
  const out: Record<string, string> = { [METRIC_NAME]: ref.metric }
  for (const t of [...ref.tags].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) out[t.key] = t.value
  return out
}

/** A pair as Prometheus writes it, `[<unix seconds>,"<value>"]`, spelled out so the time keeps its form. */
function pair(ms: number, v: number): string {
  return `[${formatTime(ms)},${JSON.stringify(formatValue(v))}]`
}

/** Answers in Prometheus' JSON, with the timestamps written as Prometheus writes them. */
function queryAnswer(resultType: string, result: string): PromHttpAnswer {
  return {
    status: 200,
    body: `{"status":"success","data":{"resultType":${JSON.stringify(resultType)},"result":${result}}}`,
  }
}

export class PromQueryApi {
  private readonly lookbackMs: number

  constructor(
    private readonly engine: StorageEngine,
    private readonly options: PromQueryApiOptions,
  ) {
    this.lookbackMs = options.lookbackDeltaMs ?? 300_000
  }

  /** One request of the query API; undefined when `path` is none of its endpoints. params: query string and (for POST) the form body, merged. */
  async handle(path: string, params: URLSearchParams, signal: AbortSignal): Promise<PromHttpAnswer | undefined> {
    const route = this.route(path)
    if (route === undefined) return undefined
    // A timer of our own rather than AbortSignal.timeout, whose timer does not keep the process
    // alive: the deadline must fire even when nothing else is pending.
    const timeout = new AbortController()
    let timer: NodeJS.Timeout | undefined
    try {
      // Only the queries take a timeout, as in Prometheus; the other endpoints ignore the parameter.
      const query = path === '/api/v1/query' || path === '/api/v1/query_range'
      const timeoutParam = query ? params.get('timeout') : null
      const timeoutMs = timeoutParam ? parseDurationParam(timeoutParam, 'timeout') : DEFAULT_TIMEOUT_MS
      timer = setTimeout(() => timeout.abort(), Math.max(0, timeoutMs))
      return await route(params, AbortSignal.any([signal, timeout.signal]))
    } catch (err: unknown) {
      return failure(this.toPromError(err, signal, timeout.signal))
    } finally {
      clearTimeout(timer)
    }
  }

  private route(path: string): ((params: URLSearchParams, signal: AbortSignal) => Promise<PromHttpAnswer>) | undefined {
    switch (path) {
      case '/api/v1/query':
        return (p, s) => this.instantQuery(p, s)
      case '/api/v1/query_range':
        return (p, s) => this.rangeQuery(p, s)
      case '/api/v1/series':
        return (p, s) => this.series(p, s)
      case '/api/v1/labels':
        return (p, s) => this.labelNames(p, s)
      case '/api/v1/status/buildinfo':
        return async () => this.buildInfo()
      // V3 keeps neither metric metadata nor exemplars (remote write's are dropped): both answer
      // empty, as Prometheus does for metrics without them, so that Grafana's metric browser and
      // exemplar queries work instead of failing.
      case '/api/v1/metadata':
        return async () => success({})
      case '/api/v1/query_exemplars':
        return async (p) => this.exemplars(p)
    }
    const m = /^\/api\/v1\/label\/([^/]+)\/values$/.exec(path)
    if (m === null) return undefined
    let name: string
    try {
      name = decodeURIComponent(m[1]!)
    } catch {
      name = m[1]!
    }
    return (p, s) => this.labelValues(name, p, s)
  }

  /** Any error as Prometheus would type it; an aborted request as canceled, or timeout when its deadline passed. */
  private toPromError(err: unknown, request: AbortSignal, timeout: AbortSignal): PromQLError {
    if (err instanceof PromQLError && err.type === 'bad_data') return err
    if (timeout.aborted && !request.aborted) {
      return new PromQLError('timeout', 'query timed out in expression evaluation', { cause: err })
    }
    if (request.aborted)
      return new PromQLError('canceled', 'query was canceled in expression evaluation', { cause: err })
    if (err instanceof PromQLError) return err
    if (err instanceof ValidationError) return new PromQLError('bad_data', err.message, { cause: err })
    if (err instanceof LimitError) return new PromQLError('execution', err.message, { cause: err })
    if (err instanceof DeadlineError) return new PromQLError('timeout', err.message, { cause: err })
    if (err instanceof UnavailableError) return new PromQLError('unavailable', err.message, { cause: err })
    // Anything else is a fault of ours; its text is not for clients.
    return new PromQLError('internal', 'internal error while evaluating the query', { cause: err })
  }

  private parseQuery(params: URLSearchParams): ParsedQuery {
    const text = params.get('query')
    if (text === null || text === '')
      throw badData('invalid parameter "query": unknown position: parse error: no expression found in input')
    try {
      return parsePromQL(text)
    } catch (err: unknown) {
      if (err instanceof PromQLError) throw badData(`invalid parameter "query": ${err.message}`)
      throw err
    }
  }

  private async instantQuery(params: URLSearchParams, signal: AbortSignal): Promise<PromHttpAnswer> {
    const timeParam = params.get('time')
    const t = timeParam ? parseTimeParam(timeParam, 'time') : Date.now()
    const query = this.parseQuery(params)
    const evaluator = new Evaluator(
      this.engine,
      { startMs: t, endMs: t, stepMs: 1, lookbackMs: this.lookbackMs },
      signal,
    )
    await evaluator.fetch(query.expr)
    if (query.expr.kind === 'matrix') {
      const series = evaluator
        .matrix(query.expr.sel, query.expr.rangeMs)
        .sort((a, b) => compareLabels(a.labels, b.labels))
      const result = series.map((s) => {
        const values: string[] = []
        for (let i = 0; i < s.ts.length; i++) values.push(pair(s.ts[i]!, s.vs[i]!))
        return `{"metric":${JSON.stringify(metricObject(s.labels))},"values":[${values.join(',')}]}`
      })
      return queryAnswer('matrix', `[${result.join(',')}]`)
    }
    const value = evaluator.eval(query.expr)
    if (value.type === 'scalar') return queryAnswer('scalar', pair(t, value.values[0]!))
    const result = sorted(value.series)
      .filter((s) => s.present[0] === 1)
      .map((s) => `{"metric":${JSON.stringify(metricObject(s.labels))},"value":${pair(t, s.values[0]!)}}`)
    return queryAnswer('vector', `[${result.join(',')}]`)
  }

  private async rangeQuery(params: URLSearchParams, signal: AbortSignal): Promise<PromHttpAnswer> {
    const startMs = parseTimeParam(params.get('start') ?? '', 'start')
    const endMs = parseTimeParam(params.get('end') ?? '', 'end')
    if (endMs < startMs) throw badData('invalid parameter "end": end timestamp must not be before start time')
    const stepText = params.get('step') ?? ''
    const stepMs = parseDurationParam(stepText, 'step')
    if (stepMs === 0 && FLOAT_RE.test(stepText) && Number(stepText) > 0) {
      throw badData(
        `invalid parameter "step": V3 keeps time to the millisecond, so a step must be at least 1ms (0.001), got ${JSON.stringify(stepText)}`,
      )
    }
    if (stepMs <= 0) {
      throw badData(
        'invalid parameter "step": zero or negative query resolution step widths are not accepted. Try a positive integer',
      )
    }
    if (Math.trunc((endMs - startMs) / stepMs) > MAX_POINTS_PER_SERIES) {
      throw badData(
        'exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)',
      )
    }
    const query = this.parseQuery(params)
    if (query.type === 'matrix') {
      throw badData('invalid expression type "range vector" for range query, must be Scalar or instant Vector')
    }
    const evaluator = new Evaluator(this.engine, { startMs, endMs, stepMs, lookbackMs: this.lookbackMs }, signal)
    await evaluator.fetch(query.expr)
    const value = evaluator.eval(query.expr)
    const series: StepSeries[] =
      value.type === 'scalar'
        ? [{ labels: [], values: value.values, present: new Uint8Array(evaluator.steps).fill(1) }]
        : sorted(value.series)
    const result = series.map((s) => {
      const values: string[] = []
      for (let i = 0; i < evaluator.steps; i++)
        if (s.present[i] === 1) values.push(pair(startMs + i * stepMs, s.values[i]!))
      return `{"metric":${JSON.stringify(metricObject(s.labels))},"values":[${values.join(',')}]}`
    })
    return queryAnswer('matrix', `[${result.join(',')}]`)
  }

  /** The selectors of the `match[]` parameters. */
  private matchers(params: URLSearchParams): Selector[] {
    return params.getAll('match[]').map((text) => {
      try {
        return parseSeriesSelector(text)
      } catch (err: unknown) {
        if (err instanceof PromQLError) throw badData(`invalid parameter "match[]": ${err.message}`)
        throw err
      }
    })
  }

  /**
   * The `start` and `end` parameters as an engine range (end exclusive), or undefined when neither
   * is given: then every series counts, whatever the time of its samples, as in Prometheus.
   */
  private metadataRange(params: URLSearchParams): { startMs: number; endMs: number } | undefined {
    const start = params.get('start')
    const end = params.get('end')
    if (!start && !end) return undefined
    const startMs = start ? parseTimeParam(start, 'start') : MIN_TIMESTAMP_MS
    const endMs = end ? parseTimeParam(end, 'end') : MAX_TIMESTAMP_MS
    if (endMs < startMs) throw badData('invalid parameter "end": end timestamp must not be before start time')
    return { startMs: Math.max(startMs, MIN_TIMESTAMP_MS), endMs: Math.min(endMs, MAX_TIMESTAMP_MS) + 1 }
  }

  /**
   * Every series that any of the selectors matches, once each; with a range, only those with a
   * sample in it (start and end inclusive), found by one count over the range per selector. Its
   * cost grows with the points in the range, up to what one query may read.
   */
  private async listSeries(
    selectors: readonly Selector[],
    range: { startMs: number; endMs: number } | undefined,
    signal: AbortSignal,
  ): Promise<SeriesRef[]> {
    const lists = await Promise.all(
      selectors.map(async (selector): Promise<readonly SeriesRef[]> => {
        if (range === undefined) return this.engine.listSeries(selector, { signal })
        // Wholly outside the timestamps V3 can store (clamped above): nothing can be in it.
        if (range.startMs >= range.endMs) return []
        try {
          const counted = await this.engine.query(
            { selector, ...range, aggregation: { func: 'count', stepMs: 0, groupBy: [], mergeSeries: false } },
            { signal },
          )
          return counted.filter((s) => s.values.length > 0)
        } catch (err) {
          // A range holding more points than a query may read: every matching series, as without a
          // range (a superset, like Prometheus' own block-wide answers), rather than an error.
          if (err instanceof LimitError && err.limit === 'max_points_per_query') {
            return this.engine.listSeries(selector, { signal })
          }
          throw err
        }
      }),
    )
    const seen = new Set<string>()
    const out: SeriesRef[] = []
    for (const list of lists) {
      for (const ref of list) {
        const key = JSON.stringify(refLabels(ref))
        if (seen.has(key)) continue
        seen.add(key)
        out.push(ref)
      }
    }
    return out
  }

  private async series(params: URLSearchParams, signal: AbortSignal): Promise<PromHttpAnswer> {
    const selectors = this.matchers(params)
    if (selectors.length === 0) throw badData('no match[] parameter provided')
    const refs = await this.listSeries(selectors, this.metadataRange(params), signal)
    const labelled = refs.map((r) => {
      const labels = refLabels(r)
      return { labels, sortKey: Object.entries(labels).map(([name, value]) => ({ name, value })) }
    })
    labelled.sort((a, b) => compareLabels(a.sortKey, b.sortKey))
    return success(labelled.map((l) => l.labels))
  }

  private async seriesOrAll(params: URLSearchParams, signal: AbortSignal): Promise<SeriesRef[]> {
    const selectors = this.matchers(params)
    const range = this.metadataRange(params)
    // No match[]: every series, which the engine selects with an empty metric and no matchers.
    return this.listSeries(selectors.length > 0 ? selectors : [{ metric: '', matchers: [] }], range, signal)
  }

  private async labelNames(params: URLSearchParams, signal: AbortSignal): Promise<PromHttpAnswer> {
    const refs = await this.seriesOrAll(params, signal)
    const names = new Set<string>()
    for (const r of refs) {
      names.add(METRIC_NAME)
      for (const t of r.tags) names.add(t.key)
    }
    return success([...names].sort())
  }

  private async labelValues(name: string, params: URLSearchParams, signal: AbortSignal): Promise<PromHttpAnswer> {
    // The names V3 stores as tag keys, which take '.', ':' and '-' beside Prometheus' own (line
    // protocol brings them, as Telegraf's Docker labels do): /api/v1/labels lists them, so they are served.
    if (name !== METRIC_NAME && nameViolation(name) !== undefined) {
      throw badData(`invalid label name: ${JSON.stringify(name)}`)
    }
    const refs = await this.seriesOrAll(params, signal)
    const values = new Set<string>()
    for (const r of refs) {
      if (name === METRIC_NAME) values.add(r.metric)
      else for (const t of r.tags) if (t.key === name) values.add(t.value)
    }
    return success([...values].sort())
  }

  /** No exemplars are stored: a valid query over a valid range has none. */
  private exemplars(params: URLSearchParams): PromHttpAnswer {
    this.parseQuery(params)
    this.metadataRange(params)
    return success([])
  }

  private buildInfo(): PromHttpAnswer {
    return success({
      version: this.options.version,
      revision: '',
      branch: '',
      buildUser: '',
      buildDate: '',
      goVersion: '',
    })
  }
}

function sorted(series: StepSeries[]): StepSeries[] {
  return [...series].sort((a, b) => compareLabels(a.labels, b.labels))
}
