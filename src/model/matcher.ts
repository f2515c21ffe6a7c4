import { type FieldViolation, ValidationError } from './errors.js'
import { compileValueRegex, type RegexCache, type ValueRegex } from './regex.js'
import { METRIC_NAME_KEY, nameViolation } from './series-key.js'
import type { MatchOp, Selector, Tag } from './types.js'

/** One validated matcher, its regular expression compiled. */
export interface CompiledMatcher {
  readonly key: string
  readonly value: string
  readonly op: MatchOp
  /** Whether a tag value satisfies the matcher; pass the empty string for a tag the series lacks. */
  matchesValue(value: string): boolean
}

/** A validated selector, ready to test series and to plan an index lookup. */
export interface CompiledSelector {
  /** The selector's metric; '' selects series of any metric (then matchers on __name__ narrow them). */
  readonly metric: string
  /** Every matcher, those on __name__ included. */
  readonly matchers: readonly CompiledMatcher[]
  /**
   * The one metric every selected series has, when the selector names one (its metric, or else an
   * equality matcher on __name__ with a non-empty value); undefined when series of many metrics
   * may match. An index looks only at that metric's postings then.
   */
  readonly onlyMetric: string | undefined
  /**
   * The tag equality matchers with a non-empty value. The series such a matcher selects are exactly
   * the posting list of its key and value, so an index can intersect those lists and skip
   * checking these matchers again.
   */
  readonly positiveEquals: readonly Tag[]
  /**
   * The tag regex matchers whose pattern is a small set of values without the empty one
   * (`host_1|host_5`): the series such a matcher selects are exactly the union of its values'
   * posting lists. They are in `residual` too.
   */
  readonly positiveSets: readonly TagValues[]
  /** Every other tag matcher: what a candidate from the posting lists (or from the metric) must still pass. */
  readonly residual: readonly CompiledMatcher[]
  /** Whether a metric name is the selector's metric (any, for '') and passes every matcher on __name__. */
  matchesMetric(metric: string): boolean
  /** Whether these tags pass every tag matcher (every matcher but those on __name__). */
  matches(tags: readonly Tag[]): boolean
  /** Whether a series passes the whole selector: matchesMetric and matches. */
  matchesSeries(metric: string, tags: readonly Tag[]): boolean
  /** Whether a series that already passed positiveEquals matches the residual matchers. */
  matchesResidual(tags: readonly Tag[]): boolean
}

/** A tag key and the values a matcher on it selects. */
export interface TagValues {
  readonly key: string
  readonly values: readonly string[]
}

/** The value of a tag, or the empty string when the series lacks it, as Prometheus compares. */
function tagValue(tags: readonly Tag[], key: string): string {
  for (const tag of tags) if (tag.key === key) return tag.value
  return ''
}

function matchAll(matchers: readonly CompiledMatcher[], tags: readonly Tag[]): boolean {
  for (const matcher of matchers) if (!matcher.matchesValue(tagValue(tags, matcher.key))) return false
  return true
}

/** Code points of a pattern an error quotes; a description should stay one readable line. */
const QUOTE_CHARS = 64

/** A pattern as an error quotes it, cut after QUOTE_CHARS code points. */
function quote(pattern: string): string {
  const cut = Array.from(pattern.slice(0, 2 * QUOTE_CHARS))
    .slice(0, QUOTE_CHARS)
    .join('')
  return cut.length < pattern.length ? `${JSON.stringify(cut)}…` : JSON.stringify(pattern)
}

class ValueMatcher implements CompiledMatcher {
  constructor(
    readonly key: string,
    readonly value: string,
    readonly op: MatchOp,
    private readonly regex: ValueRegex | undefined,
  ) {}

  matchesValue(value: string): boolean {
    switch (this.op) {
      case 'eq':
        return value === this.value
      case 'neq':
        return value !== this.value
      case 'regex':
        return this.regex!.test(value)
      case 'not_regex':
        return !this.regex!.test(value)
    }
  }
}

/** How compileSelector treats a selector. */
export interface SelectorOptions {
  /**
   * Refuse an empty metric, as for calls where selecting every metric is never meant: a delete
   * (it would delete every series) or a subscription (it would tail every write).
   */
  readonly requireMetric?: boolean
  /** Where regex matchers are compiled, so that a pattern seen before is not compiled again. */
  readonly regexes?: RegexCache
}

/**
 * Validates a selector and compiles its matchers. Throws one ValidationError naming every bad
 * field: `selector.metric`, `selector.matchers[i].key`, `selector.matchers[i].op`,
 * `selector.matchers[i].value` (a regex that is too long or too large, or does not compile, with the
 * reason). Regexes are RE2 syntax, fully anchored: see regex.ts.
 *
 * An empty metric selects series of every metric, unless `options.requireMetric`; a matcher on
 * __name__ compares the metric name, with or without a metric, as Prometheus does. The public gRPC contract still requires a metric:
 * the server refuses an empty one before a selector gets here.
 */
export function compileSelector(selector: Selector, options: SelectorOptions = {}): CompiledSelector {
  const violations: FieldViolation[] = []
  const anyMetric = selector.metric === '' && options.requireMetric !== true
  const metricProblem = anyMetric ? undefined : nameViolation(selector.metric)
  if (metricProblem !== undefined) violations.push({ field: 'selector.metric', description: metricProblem })

  const matchers: CompiledMatcher[] = []
  const nameMatchers: CompiledMatcher[] = []
  const tagMatchers: CompiledMatcher[] = []
  const positiveEquals: Tag[] = []
  const positiveSets: TagValues[] = []
  const residual: CompiledMatcher[] = []
  selector.matchers.forEach((m, i) => {
    const field = `selector.matchers[${i}]`
    const keyProblem = nameViolation(m.key)
    if (keyProblem !== undefined) violations.push({ field: `${field}.key`, description: keyProblem })
    if (typeof m.value !== 'string') {
      violations.push({ field: `${field}.value`, description: 'must be a string' })
      return
    }
    let regex: ValueRegex | undefined
    switch (m.op) {
      case 'eq':
      case 'neq':
        break
      case 'regex':
      case 'not_regex': {
        const compiled = options.regexes ? options.regexes.compile(m.value) : compileValueRegex(m.value)
        if (typeof compiled === 'string') {
          violations.push({
            field: `${field}.value`,
            description: `${quote(m.value)} ${compiled}`,
          })
          return
        }
        regex = compiled
        break
      }
      default:
        violations.push({
          field: `${field}.op`,
          description: `must be one of eq, neq, regex, not_regex, got ${String(m.op as unknown)}`,
        })
        return
    }
    const matcher = new ValueMatcher(m.key, m.value, m.op, regex)
    matchers.push(matcher)
    if (m.key === METRIC_NAME_KEY) nameMatchers.push(matcher)
    else {
      tagMatchers.push(matcher)
      if (m.op === 'eq' && m.value !== '') positiveEquals.push({ key: m.key, value: m.value })
      else residual.push(matcher)
      if (m.op === 'regex' && regex?.values && !regex.test('')) positiveSets.push({ key: m.key, values: regex.values })
    }
  })
  if (violations.length > 0) throw new ValidationError(violations)

  const metric = selector.metric
  const matchesMetric = (name: string): boolean => {
    if (metric !== '' && name !== metric) return false
    for (const matcher of nameMatchers) if (!matcher.matchesValue(name)) return false
    return true
  }
  const named = nameMatchers.find((m) => m.op === 'eq' && m.value !== '')?.value
  return {
    metric,
    matchers,
    onlyMetric: metric !== '' ? metric : named,
    positiveEquals,
    positiveSets,
    residual,
    matchesMetric,
    matches: (tags) => matchAll(tagMatchers, tags),
    matchesSeries: (name, tags) => matchesMetric(name) && matchAll(tagMatchers, tags),
    matchesResidual: (tags) => matchAll(residual, tags),
  }
}
