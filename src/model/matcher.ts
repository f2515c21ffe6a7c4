import { type FieldViolation, ValidationError } from './errors.js'
import { compileValueRegex, type ValueRegex } from './regex.js'
import { nameViolation } from './series-key.js'
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
  readonly metric: string
  readonly matchers: readonly CompiledMatcher[]
  /**
   * The equality matchers with a non-empty value. The series such a matcher selects are exactly
   * the posting list of its key and value, so an index can intersect those lists and skip
   * checking these matchers again.
   */
  readonly positiveEquals: readonly Tag[]
  /** Every other matcher: what a candidate from the posting lists (or from the metric) must still pass. */
  readonly residual: readonly CompiledMatcher[]
  /** Whether a series of this metric with these tags matches every matcher. */
  matches(tags: readonly Tag[]): boolean
  /** Whether a series that already passed positiveEquals matches the residual matchers. */
  matchesResidual(tags: readonly Tag[]): boolean
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

/**
 * Validates a selector and compiles its matchers. Throws one ValidationError naming every bad
 * field: `selector.metric`, `selector.matchers[i].key`, `selector.matchers[i].op`,
 * `selector.matchers[i].value` (a regex that is too long or too large, or does not compile, with the
 * reason). Regexes are RE2 syntax, fully anchored: see regex.ts.
 */
export function compileSelector(selector: Selector): CompiledSelector {
  const violations: FieldViolation[] = []
  const metricProblem = nameViolation(selector.metric)
  if (metricProblem !== undefined) violations.push({ field: 'selector.metric', description: metricProblem })

  const matchers: CompiledMatcher[] = []
  const positiveEquals: Tag[] = []
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
        const compiled = compileValueRegex(m.value)
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
    if (m.op === 'eq' && m.value !== '') positiveEquals.push({ key: m.key, value: m.value })
    else residual.push(matcher)
  })
  if (violations.length > 0) throw new ValidationError(violations)

  return {
    metric: selector.metric,
    matchers,
    positiveEquals,
    residual,
    matches: (tags) => matchAll(matchers, tags),
    matchesResidual: (tags) => matchAll(residual, tags),
  }
}
