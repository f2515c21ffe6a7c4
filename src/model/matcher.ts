import { type FieldViolation, ValidationError } from './errors.js'
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

class ValueMatcher implements CompiledMatcher {
  constructor(
    readonly key: string,
    readonly value: string,
    readonly op: MatchOp,
    private readonly regex: RegExp | undefined,
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
 * Compiles a regex matcher's value, fully anchored as in Prometheus: `h0[12]` matches `h01`, not
 * `h012`. The `s` flag lets `.` match newlines, as Prometheus's `(?s:...)` does, so `.*` matches
 * every value; `u` makes `.` one code point rather than one UTF-16 unit. The pattern is compiled
 * alone first: a value such as `a)|(b` would otherwise close the anchoring group and escape the
 * anchors, and the error then names the user's pattern rather than the wrapped one. Returns the
 * reason the pattern does not compile, or the compiled expression.
 */
function compileRegex(pattern: string): RegExp | string {
  try {
    new RegExp(pattern, 'su')
  } catch (err: unknown) {
    // V8 says "Invalid regular expression: /<pattern>/su: <reason>"; the caller quotes the pattern.
    const message = err instanceof Error ? err.message : String(err)
    return message.slice(message.lastIndexOf(': ') + 2)
  }
  return new RegExp(`^(?:${pattern})$`, 'su')
}

/**
 * Validates a selector and compiles its matchers. Throws one ValidationError naming every bad
 * field: `selector.metric`, `selector.matchers[i].key`, `selector.matchers[i].op`,
 * `selector.matchers[i].value` (a regex that does not compile, with the reason).
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
    let regex: RegExp | undefined
    switch (m.op) {
      case 'eq':
      case 'neq':
        break
      case 'regex':
      case 'not_regex': {
        const compiled = compileRegex(m.value)
        if (typeof compiled === 'string') {
          violations.push({
            field: `${field}.value`,
            description: `${JSON.stringify(m.value)} is not a valid regular expression: ${compiled}`,
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
