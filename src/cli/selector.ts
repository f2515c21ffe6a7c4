/**
 * The selector syntax users know from PromQL: `cpu_usage{host="a",region=~"eu-.*"}`. Matchers are
 * `=`, `!=`, `=~`, `!~`; values are double-, single- or back-quoted strings with Go-style escapes;
 * `{__name__="cpu"}` names the metric as a matcher. A syntax error carries the 1-based column of
 * the offending character so that the CLI can point at it.
 */
import type { Matcher, MatchOp, Selector } from '../model/types.js'

export class SelectorSyntaxError extends Error {
  constructor(
    readonly reason: string,
    /** 1-based column of the offending character (one past the end for a premature end). */
    readonly column: number,
    readonly input: string,
  ) {
    super(`bad selector at column ${column}: ${reason}`)
    this.name = 'SelectorSyntaxError'
  }

  /** The message, the selector and a caret under the offending column, for a terminal. */
  pointed(): string {
    return `${this.message}\n  ${this.input}\n  ${' '.repeat(this.column - 1)}^`
  }
}

const NAME_START = /[a-zA-Z_:]/
const NAME_PART = /[a-zA-Z0-9_.:-]/
const OPS: ReadonlyArray<[string, MatchOp]> = [
  ['=~', 'regex'],
  ['!~', 'not_regex'],
  ['!=', 'neq'],
  ['=', 'eq'],
]
const ESCAPES: Readonly<Record<string, string>> = {
  n: '\n',
  t: '\t',
  r: '\r',
  '\\': '\\',
  '"': '"',
  "'": "'",
  '`': '`',
}

class Scanner {
  pos = 0
  constructor(readonly input: string) {}

  fail(reason: string, at = this.pos): never {
    throw new SelectorSyntaxError(reason, at + 1, this.input)
  }

  skipSpace(): void {
    while (this.pos < this.input.length && /\s/.test(this.input[this.pos]!)) this.pos++
  }

  peek(): string | undefined {
    return this.input[this.pos]
  }

  describe(): string {
    const c = this.peek()
    return c === undefined ? 'the end of the selector' : JSON.stringify(c)
  }

  name(what: string): string {
    const start = this.pos
    if (!NAME_START.test(this.peek() ?? '')) this.fail(`expected ${what}, found ${this.describe()}`)
    this.pos++
    while (NAME_PART.test(this.peek() ?? '')) this.pos++
    return this.input.slice(start, this.pos)
  }

  op(): MatchOp {
    for (const [text, op] of OPS) {
      if (this.input.startsWith(text, this.pos)) {
        this.pos += text.length
        return op
      }
    }
    return this.fail(`expected one of =, !=, =~, !~, found ${this.describe()}`)
  }

  string(): string {
    const quote = this.peek()
    if (quote !== '"' && quote !== "'" && quote !== '`') this.fail(`expected a quoted value, found ${this.describe()}`)
    const start = this.pos
    this.pos++
    let out = ''
    for (;;) {
      const c = this.peek()
      if (c === undefined) this.fail('unterminated string', start)
      this.pos++
      if (c === quote) return out
      // Back-quoted strings are raw, as in PromQL: handy for regexes full of backslashes.
      if (c === '\\' && quote !== '`') {
        const e = this.peek()
        const escaped = e === undefined ? undefined : ESCAPES[e]
        if (escaped === undefined) this.fail(`unknown escape \\${e ?? ''}`, this.pos - 1)
        out += escaped
        this.pos++
      } else {
        out += c
      }
    }
  }
}

/** Parses a selector; throws SelectorSyntaxError naming the column of the first problem. */
export function parseSelector(input: string): Selector {
  const s = new Scanner(input)
  s.skipSpace()
  let metric = ''
  if (s.peek() !== '{') metric = s.name('a metric name or {')
  s.skipSpace()
  const matchers: Matcher[] = []
  if (s.peek() === '{') {
    s.pos++
    s.skipSpace()
    while (s.peek() !== '}') {
      const keyAt = s.pos
      const key = s.name('a tag name or }')
      s.skipSpace()
      const opAt = s.pos
      const op = s.op()
      s.skipSpace()
      const value = s.string()
      if (key === '__name__') {
        if (op !== 'eq') s.fail('__name__ takes only =', opAt)
        if (metric !== '' && metric !== value) s.fail(`the metric is already ${metric}`, keyAt)
        metric = value
      } else {
        matchers.push({ key, value, op })
      }
      s.skipSpace()
      if (s.peek() === ',') {
        s.pos++
        s.skipSpace()
      } else if (s.peek() !== '}') {
        s.fail(`expected , or }, found ${s.describe()}`)
      }
    }
    s.pos++
    s.skipSpace()
  }
  if (s.pos < input.length) s.fail(`unexpected ${s.describe()} after the selector`)
  if (metric === '') s.fail('the selector names no metric (write cpu{...} or {__name__="cpu",...})', 0)
  return { metric, matchers }
}

/** The selector that picks exactly one series among those of its metric whose tag keys are `allKeys`. */
export function exactSelector(
  metric: string,
  tags: readonly { key: string; value: string }[],
  allKeys: Iterable<string>,
): Selector {
  const own = new Set(tags.map((t) => t.key))
  const matchers: Matcher[] = tags.map((t) => ({ key: t.key, value: t.value, op: 'eq' }))
  // A series with an extra tag also matches the equalities, so every other known key must be absent.
  for (const key of allKeys) if (!own.has(key)) matchers.push({ key, value: '', op: 'eq' })
  return { metric, matchers }
}

/** Formats a selector back into the syntax parseSelector reads. */
export function formatSelector(selector: Selector): string {
  const ops: Readonly<Record<MatchOp, string>> = { eq: '=', neq: '!=', regex: '=~', not_regex: '!~' }
  if (selector.matchers.length === 0) return selector.metric
  const inner = selector.matchers.map((m) => `${m.key}${ops[m.op]}${JSON.stringify(m.value)}`).join(',')
  return `${selector.metric}{${inner}}`
}
