import { createRequire } from 'node:module'
import type { SyntaxNode } from '@lezer/common'
import { compileValueRegex } from '../../model/regex.js'
import type { Matcher, MatchOp, Selector } from '../../model/types.js'
import { badData } from './errors.js'

/**
 * PromQL text to our own typed syntax tree. The official grammar (lezer-promql) parses; this file
 * walks its tree, checks what Prometheus 2.42's parser checks (types, arguments, matchers), and
 * refuses every construct the evaluator does not implement, naming it, so that a query is either
 * answered as Prometheus answers it or refused.
 */

export type ValueType = 'scalar' | 'vector' | 'matrix'

/** A selector's series and where in time it reads them. */
export interface SelectorNode {
  /** What the engine is asked for: a metric name, or '' with matchers on `__name__`. */
  readonly selector: Selector
  /** Milliseconds the selector looks back from each evaluation time (`offset 5m`: 300,000). */
  readonly offsetMs: number
}

export type RangeFunction =
  | 'rate'
  | 'irate'
  | 'increase'
  | 'delta'
  | 'avg_over_time'
  | 'min_over_time'
  | 'max_over_time'
  | 'sum_over_time'
  | 'count_over_time'
  | 'last_over_time'
  | 'stddev_over_time'
  | 'stdvar_over_time'
  | 'present_over_time'
  | 'quantile_over_time'
  | 'changes'
  | 'resets'
  | 'idelta'
  | 'deriv'

/** Functions of instant vectors and scalars, evaluated step by step. */
export type InstantFunction =
  | 'abs'
  | 'ceil'
  | 'floor'
  | 'sqrt'
  | 'ln'
  | 'log2'
  | 'log10'
  | 'sgn'
  | 'round'
  | 'clamp'
  | 'clamp_min'
  | 'clamp_max'
  | 'time'
  | 'vector'
  | 'scalar'
  | 'histogram_quantile'

export type AggregateOp =
  | 'sum'
  | 'avg'
  | 'min'
  | 'max'
  | 'count'
  | 'stddev'
  | 'stdvar'
  | 'quantile'
  | 'topk'
  | 'bottomk'

export type ArithmeticOp = '+' | '-' | '*' | '/' | '%' | '^'
export type ComparisonOp = '==' | '!=' | '>' | '<' | '>=' | '<='
export type SetOp = 'and' | 'or' | 'unless'
export type BinaryOp = ArithmeticOp | ComparisonOp | SetOp

export type Expr =
  | { readonly kind: 'number'; readonly value: number }
  | { readonly kind: 'vector'; readonly sel: SelectorNode }
  | { readonly kind: 'matrix'; readonly sel: SelectorNode; readonly rangeMs: number }
  | {
      readonly kind: 'call'
      readonly func: RangeFunction
      /** The scalar argument of quantile_over_time. */
      readonly param?: Expr
      readonly range: { readonly sel: SelectorNode; readonly rangeMs: number }
    }
  | {
      readonly kind: 'aggregate'
      readonly op: AggregateOp
      /** The scalar argument of topk, bottomk and quantile. */
      readonly param?: Expr
      readonly expr: Expr
      /** Sorted label names of `by (…)` or `without (…)`. */
      readonly grouping: readonly string[]
      readonly without: boolean
    }
  | {
      readonly kind: 'binary'
      readonly op: BinaryOp
      readonly lhs: Expr
      readonly rhs: Expr
      readonly returnBool: boolean
      /** Between two vectors: the labels that match them (`on`) or that are left out (`ignoring`, the default with none). */
      readonly matching?: { readonly on: boolean; readonly labels: readonly string[] }
    }
  | { readonly kind: 'negate'; readonly expr: Expr }
  | { readonly kind: 'function'; readonly func: InstantFunction; readonly args: readonly Expr[] }

export const METRIC_NAME = '__name__'

const RANGE_FUNCTIONS: ReadonlySet<string> = new Set<RangeFunction>([
  'rate',
  'irate',
  'increase',
  'delta',
  'avg_over_time',
  'min_over_time',
  'max_over_time',
  'sum_over_time',
  'count_over_time',
  'last_over_time',
  'stddev_over_time',
  'stdvar_over_time',
  'present_over_time',
  'quantile_over_time',
  'changes',
  'resets',
  'idelta',
  'deriv',
])

/** The argument types of each instant function (the last ones optional where `required` says fewer), and its result. */
const INSTANT_FUNCTIONS: Readonly<
  Record<
    InstantFunction,
    { readonly args: readonly ValueType[]; readonly required?: number; readonly returns: ValueType }
  >
> = {
  abs: { args: ['vector'], returns: 'vector' },
  ceil: { args: ['vector'], returns: 'vector' },
  floor: { args: ['vector'], returns: 'vector' },
  sqrt: { args: ['vector'], returns: 'vector' },
  ln: { args: ['vector'], returns: 'vector' },
  log2: { args: ['vector'], returns: 'vector' },
  log10: { args: ['vector'], returns: 'vector' },
  sgn: { args: ['vector'], returns: 'vector' },
  round: { args: ['vector', 'scalar'], required: 1, returns: 'vector' },
  clamp: { args: ['vector', 'scalar', 'scalar'], returns: 'vector' },
  clamp_min: { args: ['vector', 'scalar'], returns: 'vector' },
  clamp_max: { args: ['vector', 'scalar'], returns: 'vector' },
  time: { args: [], returns: 'scalar' },
  vector: { args: ['scalar'], returns: 'vector' },
  scalar: { args: ['vector'], returns: 'scalar' },
  histogram_quantile: { args: ['scalar', 'vector'], returns: 'vector' },
}

const AGGREGATE_OPS: ReadonlySet<string> = new Set<AggregateOp>([
  'sum',
  'avg',
  'min',
  'max',
  'count',
  'stddev',
  'stdvar',
  'quantile',
  'topk',
  'bottomk',
])

/** Grammar node names of the binary operators the evaluator implements. */
const BINARY_OPS: Readonly<Record<string, BinaryOp>> = {
  Add: '+',
  Sub: '-',
  Mul: '*',
  Div: '/',
  Mod: '%',
  Pow: '^',
  Eql: '==',
  Neq: '!=',
  Gtr: '>',
  Lss: '<',
  Gte: '>=',
  Lte: '<=',
  And: 'and',
  Or: 'or',
  Unless: 'unless',
}

const COMPARISONS: ReadonlySet<BinaryOp> = new Set<BinaryOp>(['==', '!=', '>', '<', '>=', '<='])

export function isComparison(op: BinaryOp): op is ComparisonOp {
  return COMPARISONS.has(op)
}

export function isSetOp(op: BinaryOp): op is SetOp {
  return op === 'and' || op === 'or' || op === 'unless'
}

/** How the query names each node it refuses: Prometheus' own names for the constructs. */
const UNSUPPORTED: Readonly<Record<string, string>> = {
  SubqueryExpr: 'subqueries',
  StepInvariantExpr: 'the @ modifier',
  StringLiteral: 'string literals',
  AnchoredExpr: 'the anchored modifier',
  SmoothedExpr: 'the smoothed modifier',
}

/** A parsed query and the type of its value. */
export interface ParsedQuery {
  readonly expr: Expr
  readonly type: ValueType
}

type PromQLParser = typeof import('@prometheus-io/lezer-promql')['parser']
let promqlParser: PromQLParser | undefined

/** The official grammar's parser, loaded with the first query: a server nobody asks PromQL of never loads it. */
function grammar(): PromQLParser {
  promqlParser ??= (
    createRequire(import.meta.url)('@prometheus-io/lezer-promql') as typeof import('@prometheus-io/lezer-promql')
  ).parser
  return promqlParser
}

/** Parses a PromQL query; throws bad_data for a syntax error, a type error, or anything unsupported. */
export function parsePromQL(text: string): ParsedQuery {
  if (text.trim() === '') throw badData('parse error: no expression found in input')
  const tree = grammar().parse(text)
  tree.iterate({
    enter(node) {
      if (node.type.isError) {
        const found = text.slice(node.from, node.to)
        const where = position(text, node.from)
        throw badData(
          found === ''
            ? `parse error at ${where}: unexpected end of input or missing token`
            : `parse error at ${where}: unexpected ${JSON.stringify(found)}`,
        )
      }
    },
  })
  const top = children(tree.topNode)
  if (top.length !== 1) throw badData('parse error: expected exactly one expression')
  try {
    return new Converter(text).expr(top[0]!)
  } catch (err: unknown) {
    if (err instanceof RangeError) throw badData('parse error: the query nests too deeply')
    throw err
  }
}

/** Parses a series selector as `match[]` takes it: a vector selector alone, nothing else. */
export function parseSeriesSelector(text: string): Selector {
  const parsed = parsePromQL(text)
  if (parsed.expr.kind !== 'vector' || parsed.expr.sel.offsetMs !== 0) {
    throw badData(`parse error: expected a series selector such as up{job="x"}, got ${JSON.stringify(text)}`)
  }
  return parsed.expr.sel.selector
}

/** `line:column` of an offset in the query, 1-based as Prometheus reports positions. */
function position(text: string, offset: number): string {
  const before = text.slice(0, offset).split('\n')
  return `${before.length}:${before[before.length - 1]!.length + 1}`
}

/** The children of a node, comments left out. */
function children(node: SyntaxNode): SyntaxNode[] {
  const out: SyntaxNode[] = []
  for (let c = node.firstChild; c !== null; c = c.nextSibling) if (c.name !== 'LineComment') out.push(c)
  return out
}

function child(node: SyntaxNode, name: string): SyntaxNode | undefined {
  return children(node).find((c) => c.name === name)
}

/** Milliseconds per unit of Prometheus' duration syntax (model.ParseDuration). */
const DURATION_UNITS: Readonly<Record<string, number>> = {
  y: 365 * 86_400_000,
  w: 7 * 86_400_000,
  d: 86_400_000,
  h: 3_600_000,
  m: 60_000,
  s: 1000,
  ms: 1,
}

const DURATION_RE = /^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$/

/** Parses a duration such as `1h30m` in milliseconds, as Prometheus' model.ParseDuration; undefined if it is none. */
export function parseDurationMs(text: string): number | undefined {
  if (text === '0') return 0
  if (text === '') return undefined
  const m = DURATION_RE.exec(text)
  if (m === null) return undefined
  const units = ['y', 'w', 'd', 'h', 'm', 's', 'ms']
  let ms = 0
  for (let i = 0; i < units.length; i++) {
    const digits = m[i + 1]
    if (digits !== undefined) ms += Number(digits) * DURATION_UNITS[units[i]!]!
  }
  return Number.isSafeInteger(ms) ? ms : undefined
}

/** Unquotes a PromQL string literal: Go's escapes in '…' and "…", none in `…`. */
export function unquote(literal: string): string {
  const q = literal[0]
  if (literal.length < 2 || literal[literal.length - 1] !== q)
    throw badData(`parse error: unterminated string ${literal}`)
  const body = literal.slice(1, -1)
  if (q === '`') return body
  let out = ''
  // \xNN and \NNN are bytes, as in Go: a run of them spells UTF-8 ("\xc3\xa9" is é).
  let bytes: number[] = []
  const flush = (): void => {
    if (bytes.length === 0) return
    try {
      out += UTF8.decode(new Uint8Array(bytes))
    } catch {
      throw badData(`parse error: invalid UTF-8 in the byte escapes of ${literal}`)
    }
    bytes = []
  }
  for (let i = 0; i < body.length; i++) {
    const ch = body[i]!
    if (ch !== '\\') {
      flush()
      out += ch
      continue
    }
    const e = body[++i]
    if (e === 'x' || (e !== undefined && e >= '0' && e <= '7')) {
      const digits = e === 'x' ? body.slice(i + 1, i + 3) : body.slice(i, i + 3)
      if (
        !(e === 'x' ? /^[0-9a-fA-F]{2}$/ : /^[0-7]{3}$/).test(digits) ||
        Number.parseInt(digits, e === 'x' ? 16 : 8) > 255
      )
        throw badData(`parse error: invalid escape in ${literal}`)
      bytes.push(Number.parseInt(digits, e === 'x' ? 16 : 8))
      i += 2
      continue
    }
    flush()
    if (e !== undefined && SIMPLE_ESCAPES[e] !== undefined) out += SIMPLE_ESCAPES[e]
    else if (e === q) out += q
    else if (e === 'u' || e === 'U') {
      const len = e === 'u' ? 4 : 8
      const hex = body.slice(i + 1, i + 1 + len)
      if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== len) throw badData(`parse error: invalid escape in ${literal}`)
      const code = Number.parseInt(hex, 16)
      // Go refuses surrogates and anything above U+10FFFF here.
      if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
        throw badData(`parse error: invalid escape in ${literal}`)
      out += String.fromCodePoint(code)
      i += len
    } else throw badData(`parse error: unknown escape sequence in ${literal}`)
  }
  flush()
  return out
}

const SIMPLE_ESCAPES: Readonly<Record<string, string>> = {
  a: '\x07',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
  v: '\v',
  '\\': '\\',
}
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** Parses a number literal as Prometheus 2.42 takes it: decimal, hexadecimal, Inf and NaN, signed. */
function parseNumber(text: string): number {
  let sign = 1
  let rest = text
  if (rest.startsWith('-') || rest.startsWith('+')) {
    sign = rest.startsWith('-') ? -1 : 1
    rest = rest.slice(1).trimStart()
  }
  const lower = rest.toLowerCase()
  if (lower === 'inf') return sign * Number.POSITIVE_INFINITY
  if (lower === 'nan') return Number.NaN
  // Prometheus reads an integer as Go's ParseInt with base 0 first: 0x1f is hexadecimal and 010
  // octal (8); what fails there (09, 1.5) is read as a float, and what overflows is an error.
  let value: number | undefined
  if (/^0x[0-9a-f]+$/.test(lower)) value = Number.parseInt(lower.slice(2), 16)
  else if (/^0[0-7]+$/.test(lower)) value = Number.parseInt(lower, 8)
  else if (/^(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$/.test(lower)) value = Number(lower)
  if (value !== undefined && Number.isFinite(value)) return sign * value
  if (value !== undefined) throw badData(`parse error: error parsing number: ${JSON.stringify(text)} is out of range`)
  throw badData(`parse error: ${JSON.stringify(text)} is not a number (durations as numbers need Prometheus 3)`)
}

const MATCH_OPS: Readonly<Record<string, MatchOp>> = {
  EqlSingle: 'eq',
  Neq: 'neq',
  EqlRegex: 'regex',
  NeqRegex: 'not_regex',
}

/** Whether a matcher selects series that lack its label, which Prometheus compares as the empty value. */
function matchesEmpty(m: Matcher): boolean {
  switch (m.op) {
    case 'eq':
      return m.value === ''
    case 'neq':
      return m.value !== ''
    case 'regex':
    case 'not_regex': {
      const re = compileValueRegex(m.value)
      if (typeof re === 'string') throw badData(`parse error: regex ${JSON.stringify(m.value)} ${re}`)
      return re.test('') === (m.op === 'regex')
    }
  }
}

const TYPE_NAMES: Readonly<Record<ValueType, string>> = {
  scalar: 'scalar',
  vector: 'instant vector',
  matrix: 'range vector',
}

class Converter {
  constructor(private readonly text: string) {}

  private src(node: SyntaxNode): string {
    return this.text.slice(node.from, node.to)
  }

  expr(node: SyntaxNode): ParsedQuery {
    switch (node.name) {
      case 'ParenExpr':
        return this.expr(this.only(node))
      case 'NumberDurationLiteral':
        return { expr: { kind: 'number', value: parseNumber(this.src(node)) }, type: 'scalar' }
      case 'VectorSelector':
        return { expr: { kind: 'vector', sel: { selector: this.selector(node), offsetMs: 0 } }, type: 'vector' }
      case 'MatrixSelector':
        return this.matrix(node, 0)
      case 'OffsetExpr':
        return this.offset(node)
      case 'FunctionCall':
        return this.call(node)
      case 'AggregateExpr':
        return this.aggregate(node)
      case 'BinaryExpr':
        return this.binary(node)
      case 'UnaryExpr':
        return this.unary(node)
      default: {
        const what = UNSUPPORTED[node.name] ?? node.name
        throw badData(`unsupported PromQL construct: ${what} (${JSON.stringify(this.src(node))}) is not implemented`)
      }
    }
  }

  /** The single expression inside a node such as ParenExpr. */
  private only(node: SyntaxNode): SyntaxNode {
    const inner = children(node)
    if (inner.length !== 1) throw badData(`parse error: unexpected ${JSON.stringify(this.src(node))}`)
    return inner[0]!
  }

  private selector(node: SyntaxNode): Selector {
    const ident = child(node, 'Identifier')
    const name = ident ? this.src(ident) : undefined
    const matchers: Matcher[] = []
    const list = child(node, 'LabelMatchers')
    for (const m of list ? children(list) : []) {
      // Prometheus 3's quoted names: a bare `"name"` is the metric, `"tag.key"="v"` a matcher.
      if (m.name === 'QuotedLabelName') {
        matchers.push({ key: METRIC_NAME, op: 'eq', value: this.labelName(m) })
        continue
      }
      const [label, op, value] = children(m)
      const matchOp = op ? MATCH_OPS[children(op)[0]?.name ?? ''] : undefined
      if (!label || !value || matchOp === undefined) throw badData(`parse error: bad matcher ${this.src(m)}`)
      matchers.push({ key: this.labelName(label), op: matchOp, value: unquote(this.src(value)) })
    }
    const bare = list ? children(list).filter((m) => m.name === 'QuotedLabelName').length : 0
    if ((name !== undefined && matchers.some((m) => m.key === METRIC_NAME)) || bare > 1) {
      throw badData(`parse error: metric name must not be set twice: ${JSON.stringify(this.src(node))}`)
    }
    const all = name !== undefined ? [{ key: METRIC_NAME, op: 'eq' as const, value: name }, ...matchers] : matchers
    // Every matcher is checked, a bad regex included, before the rule on empty matchers.
    const empty = all.map(matchesEmpty)
    if (empty.every(Boolean)) {
      throw badData(
        `parse error: vector selector must contain at least one non-empty matcher: ${JSON.stringify(this.src(node))}`,
      )
    }
    if (name !== undefined) return { metric: name, matchers }
    // One equality on the name is the metric itself; the engine takes any other name matcher as is.
    const names = matchers.filter((m) => m.key === METRIC_NAME)
    if (names.length === 1 && names[0]!.op === 'eq') {
      return { metric: names[0]!.value, matchers: matchers.filter((m) => m.key !== METRIC_NAME) }
    }
    return { metric: '', matchers }
  }

  private duration(node: SyntaxNode): number {
    const parts = children(node)
    const literal = parts.length === 1 && parts[0]!.name === 'NumberDurationLiteralInDurationContext'
    const ms = literal ? parseDurationMs(this.src(parts[0]!)) : undefined
    if (ms === undefined) {
      throw badData(`parse error: bad duration ${JSON.stringify(this.src(node))}: a duration such as 5m is expected`)
    }
    return ms
  }

  private matrix(node: SyntaxNode, offsetMs: number): ParsedQuery {
    const [inner, range] = children(node)
    if (!inner || range?.name !== 'DurationExpr') throw badData(`parse error: bad range ${this.src(node)}`)
    if (inner.name === 'OffsetExpr') throw badData('parse error: no offset modifiers allowed before range')
    if (inner.name !== 'VectorSelector') throw badData('parse error: ranges only allowed for vector selectors')
    const rangeMs = this.duration(range)
    if (rangeMs <= 0) throw badData(`parse error: range must be positive: ${JSON.stringify(this.src(range))}`)
    return { expr: { kind: 'matrix', sel: { selector: this.selector(inner), offsetMs }, rangeMs }, type: 'matrix' }
  }

  /**
   * An OffsetExpr, or with `target` the offset of OffsetExpr `node` applied to `target`, the
   * rightmost operand of the expression it was parsed onto.
   */
  private offset(node: SyntaxNode, target?: SyntaxNode): ParsedQuery {
    const parts = children(node)
    const inner = target ?? parts[0]
    const amount = parts[parts.length - 1]
    if (!inner || amount?.name !== 'OffsetDurationExpr') throw badData(`parse error: bad offset ${this.src(node)}`)
    const offsetMs = this.offsetDuration(amount)
    if (inner.name === 'VectorSelector') {
      return { expr: { kind: 'vector', sel: { selector: this.selector(inner), offsetMs } }, type: 'vector' }
    }
    if (inner.name === 'MatrixSelector') return this.matrix(inner, offsetMs)
    if (inner.name === 'OffsetExpr') throw badData('parse error: offset may not be set multiple times')
    if (inner.name === 'SubqueryExpr') return this.expr(inner)
    // lezer-promql hangs `a - b offset 5m` and `-b offset 5m` on the whole expression; Prometheus'
    // own parser gives the offset to the operand before it, b.
    if (inner.name === 'BinaryExpr') return this.binary(inner, node)
    if (inner.name === 'UnaryExpr') return this.unary(inner, node)
    throw badData(
      'parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery',
    )
  }

  /** An offset: a duration, negated by a leading minus. */
  private offsetDuration(node: SyntaxNode): number {
    const parts = children(node)
    if (parts.length === 2 && parts[0]!.name === 'UnaryOp') {
      const sign = this.src(parts[0]!) === '-' ? -1 : 1
      return sign * this.offsetDuration(parts[1]!)
    }
    return this.duration(node)
  }

  private typed(node: SyntaxNode, want: ValueType, context: string): Expr {
    const got = this.expr(node)
    if (got.type !== want) {
      throw badData(`parse error: expected type ${TYPE_NAMES[want]} in ${context}, got ${TYPE_NAMES[got.type]}`)
    }
    return got.expr
  }

  private call(node: SyntaxNode): ParsedQuery {
    const [ident, body] = children(node)
    const name = ident ? this.src(ident) : ''
    if (Object.hasOwn(INSTANT_FUNCTIONS, name) && body) return this.instantCall(name as InstantFunction, body)
    if (!RANGE_FUNCTIONS.has(name) || !body) {
      throw badData(`unsupported PromQL construct: function ${JSON.stringify(name)} is not implemented`)
    }
    const func = name as RangeFunction
    const args = children(body)
    const want = func === 'quantile_over_time' ? 2 : 1
    if (args.length !== want) {
      throw badData(`parse error: expected ${want} argument(s) in call to ${JSON.stringify(func)}, got ${args.length}`)
    }
    const context = `call to function ${JSON.stringify(func)}`
    const param = want === 2 ? this.typed(args[0]!, 'scalar', context) : undefined
    const range = this.typed(args[want - 1]!, 'matrix', context)
    if (range.kind !== 'matrix') throw badData(`parse error: expected a range vector selector in ${context}`)
    return {
      expr: { kind: 'call', func, range: { sel: range.sel, rangeMs: range.rangeMs }, ...(param ? { param } : {}) },
      type: 'vector',
    }
  }

  private instantCall(func: InstantFunction, body: SyntaxNode): ParsedQuery {
    const sig = INSTANT_FUNCTIONS[func]
    const args = children(body)
    const required = sig.required ?? sig.args.length
    if (args.length < required || args.length > sig.args.length) {
      const want = required === sig.args.length ? `${required}` : `${required} to ${sig.args.length}`
      throw badData(`parse error: expected ${want} argument(s) in call to ${JSON.stringify(func)}, got ${args.length}`)
    }
    const context = `call to function ${JSON.stringify(func)}`
    return {
      expr: { kind: 'function', func, args: args.map((a, i) => this.typed(a, sig.args[i]!, context)) },
      type: sig.returns,
    }
  }

  private aggregate(node: SyntaxNode): ParsedQuery {
    const parts = children(node)
    const opNode = parts.find((p) => p.name === 'AggregateOp')
    const body = parts.find((p) => p.name === 'FunctionCallBody')
    const modifier = parts.find((p) => p.name === 'AggregateModifier')
    // Keywords are case-insensitive in PromQL: SUM is sum.
    const name = opNode ? this.src(opNode).toLowerCase() : ''
    if (!AGGREGATE_OPS.has(name) || !body) {
      throw badData(`unsupported PromQL construct: aggregation ${JSON.stringify(name)} is not implemented`)
    }
    const op = name as AggregateOp
    const args = children(body)
    const want = op === 'topk' || op === 'bottomk' || op === 'quantile' ? 2 : 1
    if (args.length === 0) throw badData('parse error: no arguments for aggregate expression provided')
    if (args.length !== want) {
      throw badData(
        `parse error: wrong number of arguments for aggregate expression provided, expected ${want}, got ${args.length}`,
      )
    }
    const param = want === 2 ? this.typed(args[0]!, 'scalar', 'aggregation parameter') : undefined
    const expr = this.typed(args[want - 1]!, 'vector', 'aggregation expression')
    let grouping: string[] = []
    let without = false
    if (modifier) {
      without = child(modifier, 'Without') !== undefined
      const labels = child(modifier, 'GroupingLabels')
      grouping = labels ? this.labelList(labels) : []
    }
    return {
      expr: {
        kind: 'aggregate',
        op,
        expr,
        grouping: [...new Set(grouping)].sort(),
        without,
        ...(param ? { param } : {}),
      },
      type: 'vector',
    }
  }

  private labelList(node: SyntaxNode): string[] {
    return children(node).map((l) => this.labelName(l))
  }

  /** A label name as written (`job`) or quoted (`"k8s.pod"`, Prometheus 3's syntax for any name). */
  private labelName(node: SyntaxNode): string {
    if (node.name === 'LabelName') return this.src(node)
    const literal = node.name === 'QuotedLabelName' ? child(node, 'StringLiteral') : undefined
    if (literal === undefined) throw badData(`parse error: bad label name ${this.src(node)}`)
    const name = unquote(this.src(literal))
    if (name === '') throw badData(`parse error: invalid label name ${this.src(node)}: it is empty`)
    return name
  }

  /** A BinaryExpr; with `offsetNode`, that OffsetExpr's offset goes to its right operand (see offset). */
  private binary(node: SyntaxNode, offsetNode?: SyntaxNode): ParsedQuery {
    const parts = children(node)
    const lhsNode = parts[0]
    const opNode = parts[1]
    const rhsNode = parts[parts.length - 1]
    if (!lhsNode || !opNode || !rhsNode || parts.length < 3) throw badData(`parse error: ${this.src(node)}`)
    const op = BINARY_OPS[opNode.name]
    if (op === undefined) {
      throw badData(
        `unsupported PromQL construct: the binary operator ${JSON.stringify(this.src(opNode))} is not implemented`,
      )
    }
    let returnBool = false
    let matching: { on: boolean; labels: string[] } | undefined
    for (const mod of parts.slice(2, -1)) {
      if (mod.name === 'BoolModifier') returnBool = true
      else if (mod.name === 'MatchingModifierClause') {
        const clause = children(mod)
        if (clause.some((c) => c.name === 'GroupLeft' || c.name === 'GroupRight')) {
          throw badData('unsupported PromQL construct: group_left and group_right are not implemented')
        }
        const labels = child(mod, 'GroupingLabels')
        matching = { on: child(mod, 'On') !== undefined, labels: labels ? this.labelList(labels) : [] }
      } else throw badData(`unsupported PromQL construct: ${JSON.stringify(this.src(mod))} is not implemented`)
    }
    // lezer-promql's number token holds its sign, so `-2 ^ 2` comes as (-2) ^ 2; in Prometheus a
    // sign binds looser than ^, and it is -(2 ^ 2).
    const lhsText = this.src(lhsNode)
    const signed = op === '^' && lhsNode.name === 'NumberDurationLiteral' && /^[-+]/.test(lhsText)
    const lhs: ParsedQuery = signed
      ? { expr: { kind: 'number', value: parseNumber(lhsText.slice(1).trimStart()) }, type: 'scalar' }
      : this.expr(lhsNode)
    const rhs = offsetNode === undefined ? this.expr(rhsNode) : this.offset(offsetNode, rhsNode)
    if (signed && lhsText.startsWith('-')) {
      const { expr, type } = this.combine(op, lhs, rhs, returnBool, matching)
      return { expr: { kind: 'negate', expr }, type }
    }
    return this.combine(op, lhs, rhs, returnBool, matching)
  }

  /** The binary expression of two parsed operands, checked as Prometheus checks them. */
  private combine(
    op: BinaryOp,
    lhs: ParsedQuery,
    rhs: ParsedQuery,
    returnBool: boolean,
    matching: { on: boolean; labels: string[] } | undefined,
  ): ParsedQuery {
    if (lhs.type === 'matrix' || rhs.type === 'matrix') {
      throw badData('parse error: binary expression must contain only scalar and instant vector types')
    }
    const comparison = isComparison(op)
    if (returnBool && !comparison) throw badData('parse error: bool modifier can only be used on comparison operators')
    if (comparison && !returnBool && lhs.type === 'scalar' && rhs.type === 'scalar') {
      throw badData('parse error: comparisons between scalars must use BOOL modifier')
    }
    const vectors = lhs.type === 'vector' && rhs.type === 'vector'
    // Prometheus ignores an empty on() or ignoring() where a scalar is involved, and refuses labels there.
    if (matching && matching.labels.length > 0 && !vectors) {
      throw badData('parse error: vector matching only allowed between instant vectors')
    }
    if (isSetOp(op) && !vectors) {
      throw badData(`parse error: set operator ${JSON.stringify(op)} not allowed in binary scalar expression`)
    }
    const type: ValueType = lhs.type === 'scalar' && rhs.type === 'scalar' ? 'scalar' : 'vector'
    return {
      expr: {
        kind: 'binary',
        op,
        lhs: lhs.expr,
        rhs: rhs.expr,
        returnBool,
        ...(vectors ? { matching: matching ?? { on: false, labels: [] } } : {}),
      },
      type,
    }
  }

  /** A UnaryExpr; with `offsetNode`, that OffsetExpr's offset goes to its operand (see offset). */
  private unary(node: SyntaxNode, offsetNode?: SyntaxNode): ParsedQuery {
    const [opNode, inner] = children(node)
    if (!opNode || !inner) throw badData(`parse error: ${this.src(node)}`)
    const operand = offsetNode === undefined ? this.expr(inner) : this.offset(offsetNode, inner)
    if (operand.type === 'matrix') {
      throw badData(
        'parse error: unary expression only allowed on expressions of type scalar or instant vector, got "range vector"',
      )
    }
    if (this.src(opNode) === '+') return operand
    if (operand.expr.kind === 'number') return { expr: { kind: 'number', value: -operand.expr.value }, type: 'scalar' }
    return { expr: { kind: 'negate', expr: operand.expr }, type: operand.type }
  }
}
