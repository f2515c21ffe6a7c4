import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parseDurationParam, parseTimeParam } from '../../src/server/promql/api.js'
import { parseDurationMs, parsePromQL, parseSeriesSelector, unquote } from '../../src/server/promql/ast.js'
import { PromQLError } from '../../src/server/promql/errors.js'
import { formatTime, formatValue } from '../../src/server/promql/format.js'

function refused(query: string, pattern: RegExp): void {
  assert.throws(
    () => parsePromQL(query),
    (err: unknown) => err instanceof PromQLError && err.type === 'bad_data' && pattern.test(err.message),
    query,
  )
}

describe('promql: parsing to our syntax tree', () => {
  test('a selector becomes an engine selector: the name as metric, or matchers on __name__', () => {
    const q = parsePromQL('up{job="x", instance!~"a.*"}')
    assert.equal(q.type, 'vector')
    assert.deepEqual(q.expr, {
      kind: 'vector',
      sel: {
        selector: {
          metric: 'up',
          matchers: [
            { key: 'job', op: 'eq', value: 'x' },
            { key: 'instance', op: 'not_regex', value: 'a.*' },
          ],
        },
        offsetMs: 0,
      },
    })
    const byName = parsePromQL('{__name__=~"a.*", job="x"}')
    assert.deepEqual(byName.expr.kind === 'vector' && byName.expr.sel.selector, {
      metric: '',
      matchers: [
        { key: '__name__', op: 'regex', value: 'a.*' },
        { key: 'job', op: 'eq', value: 'x' },
      ],
    })
    const eqName = parsePromQL('{__name__="up"}')
    assert.deepEqual(eqName.expr.kind === 'vector' && eqName.expr.sel.selector, { metric: 'up', matchers: [] })
  })

  test('ranges, offsets (negative too) and functions', () => {
    const q = parsePromQL('rate(http_total[5m] offset -1m)')
    assert.equal(q.type, 'vector')
    assert.equal(q.expr.kind, 'call')
    if (q.expr.kind !== 'call') return
    assert.equal(q.expr.func, 'rate')
    assert.equal(q.expr.range.rangeMs, 300_000)
    assert.equal(q.expr.range.sel.offsetMs, -60_000)
    const m = parsePromQL('x[1h30m] offset 2d')
    assert.equal(m.type, 'matrix')
    assert.deepEqual(m.expr.kind === 'matrix' && [m.expr.rangeMs, m.expr.sel.offsetMs], [5_400_000, 172_800_000])
  })

  test('aggregations with by/without before or after the body, and their parameters', () => {
    const a = parsePromQL('sum(rate(x[1m])) by (b, a)')
    assert.deepEqual(a.expr.kind === 'aggregate' && [a.expr.op, a.expr.grouping, a.expr.without], [
      'sum',
      ['a', 'b'],
      false,
    ])
    const t = parsePromQL('topk without (job) (3, x)')
    assert.deepEqual(t.expr.kind === 'aggregate' && [t.expr.op, t.expr.param, t.expr.without], [
      'topk',
      { kind: 'number', value: 3 },
      true,
    ])
  })

  test('binary operators: precedence, bool, on/ignoring, unary minus and numbers', () => {
    const q = parsePromQL('a + b * 2 > bool on(job) c')
    assert.equal(q.expr.kind, 'binary')
    if (q.expr.kind !== 'binary') return
    assert.equal(q.expr.op, '>')
    assert.equal(q.expr.returnBool, true)
    assert.deepEqual(q.expr.matching, { on: true, labels: ['job'] })
    assert.equal(q.expr.lhs.kind === 'binary' && q.expr.lhs.op, '+')
    assert.deepEqual(parsePromQL('-(2 ^ 3)').expr, {
      kind: 'negate',
      expr: {
        kind: 'binary',
        op: '^',
        lhs: { kind: 'number', value: 2 },
        rhs: { kind: 'number', value: 3 },
        returnBool: false,
      },
    })
    assert.deepEqual(parsePromQL('0x1F').expr, { kind: 'number', value: 31 })
    assert.deepEqual(parsePromQL('010').expr, { kind: 'number', value: 8 })
    assert.deepEqual(parsePromQL('09').expr, { kind: 'number', value: 9 })
    assert.deepEqual(parsePromQL('1.5e3').expr, { kind: 'number', value: 1500 })
    assert.throws(() => parsePromQL('1e400'), PromQLError)
    assert.deepEqual(parsePromQL('-Inf').expr, { kind: 'number', value: Number.NEGATIVE_INFINITY })
    assert.ok(Number.isNaN((parsePromQL('NaN').expr as { value: number }).value))
    assert.equal(parsePromQL('1 + 2').type, 'scalar')
    assert.equal(parsePromQL('x - ignoring(a) y').type, 'vector')
    // An empty on() beside a scalar is ignored, as Prometheus does.
    assert.deepEqual(parsePromQL('1 + on() x').expr, parsePromQL('1 + x').expr)
    const set = parsePromQL('a and on(job) b or c unless d')
    assert.equal(set.expr.kind === 'binary' && set.expr.op, 'or')
  })

  test('refuses constructs outside the subset, naming them', () => {
    refused('x[5m:1m]', /subqueries/)
    refused('x @ 100', /@ modifier/)
    refused('"text"', /string literals/)
    refused('exp(x)', /function "exp" is not implemented/)
    refused('label_replace(x, "a", "$1", "b", "(.*)")', /function "label_replace" is not implemented/)
    refused('predict_linear(x[5m], 60)', /function "predict_linear" is not implemented/)
    refused('count_values("v", x)', /aggregation "count_values"/)
    refused('group(x)', /aggregation "group"/)
    refused('a * on(x) group_left b', /group_left/)
    refused('a atan2 b', /"atan2" is not implemented/)
  })

  test('refuses what Prometheus 2.42 refuses', () => {
    refused('', /no expression/)
    refused('up{', /parse error/)
    refused('1 +', /parse error/)
    refused('sum(x', /parse error/)
    refused('{job=""}', /at least one non-empty matcher/)
    refused('{job=~".*"}', /at least one non-empty matcher/)
    refused('up{__name__="x"}', /metric name must not be set twice/)
    refused('rate(x)', /expected type range vector/)
    refused('sum(x[5m])', /expected type instant vector/)
    refused('x[5m] + 1', /only scalar and instant vector/)
    refused('1 > 2', /must use BOOL/)
    refused('x + bool 1', /bool modifier can only be used on comparison/)
    refused('1 + on(a) x', /vector matching only allowed between instant vectors/)
    refused('1 and x', /set operator "and" not allowed in binary scalar expression/)
    refused('x or bool y', /bool modifier can only be used on comparison/)
    refused('topk(x)', /wrong number of arguments/)
    refused('quantile_over_time(x[5m])', /expected 2 argument/)
    refused('(x)[5m]', /ranges only allowed for vector selectors/)
    refused('x offset 1m [5m]', /no offset modifiers allowed before range/)
    refused('(x + y) offset 1m', /offset modifier must be preceded/)
    refused('x[5]', /bad duration/)
    refused('x{a=~"("}', /regex/)
    refused('-x[5m]', /unary expression only allowed|ranges only allowed/)
    refused('x{"__name__"="y"}', /metric name must not be set twice/)
    refused('x{""="b"}', /invalid label name/)
    refused('{"x", "y"}', /metric name must not be set twice/)
  })

  test('instant functions: arguments counted and typed', () => {
    assert.equal(parsePromQL('abs(x)').type, 'vector')
    assert.equal(parsePromQL('round(x)').type, 'vector')
    assert.equal(parsePromQL('round(x, 5)').type, 'vector')
    assert.equal(parsePromQL('time()').type, 'scalar')
    assert.equal(parsePromQL('scalar(x)').type, 'scalar')
    assert.equal(parsePromQL('vector(1)').type, 'vector')
    assert.equal(parsePromQL('histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))').type, 'vector')
    assert.equal(parsePromQL('changes(x[5m])').type, 'vector')
    refused('round(x, 1, 2)', /expected 1 to 2 argument/)
    refused('time(1)', /expected 0 argument/)
    refused('clamp(x, 1)', /expected 3 argument/)
    refused('vector(x)', /expected type scalar/)
    refused('scalar(1)', /expected type instant vector/)
    refused('abs(x[5m])', /expected type instant vector/)
    refused('histogram_quantile(x, y)', /expected type scalar/)
    refused('deriv(x)', /expected type range vector/)
  })

  test('match[] takes a selector alone', () => {
    assert.deepEqual(parseSeriesSelector('up{job="a"}'), {
      metric: 'up',
      matchers: [{ key: 'job', op: 'eq', value: 'a' }],
    })
    assert.throws(() => parseSeriesSelector('rate(up[5m])'), PromQLError)
    assert.throws(() => parseSeriesSelector('up offset 5m'), PromQLError)
  })

  test("Prometheus 3's quoted names select tag keys PromQL's own syntax cannot write", () => {
    assert.deepEqual(parseSeriesSelector('{"docker.image"="nginx", "k8s-pod"=~"web-.*", job!="a"}'), {
      metric: '',
      matchers: [
        { key: 'docker.image', op: 'eq', value: 'nginx' },
        { key: 'k8s-pod', op: 'regex', value: 'web-.*' },
        { key: 'job', op: 'neq', value: 'a' },
      ],
    })
    // A bare quoted name is the metric's.
    assert.deepEqual(parseSeriesSelector('{"cpu.usage", "host:name"="a"}'), {
      metric: 'cpu.usage',
      matchers: [{ key: 'host:name', op: 'eq', value: 'a' }],
    })
    const a = parsePromQL('sum by ("docker.image", job) (rate(x{"a.b"="c"}[5m]))')
    assert.deepEqual(a.expr.kind === 'aggregate' && a.expr.grouping, ['docker.image', 'job'])
    const b = parsePromQL('x + on ("k8s.pod") y')
    assert.deepEqual(b.expr.kind === 'binary' && b.expr.matching?.labels, ['k8s.pod'])
  })

  test('a sign on a number binds looser than ^, as in Prometheus: -2 ^ 2 is -(2 ^ 2)', () => {
    const num = (value: number) => ({ kind: 'number', value })
    const pow = (lhs: object, rhs: object) => ({ kind: 'binary', op: '^', lhs, rhs, returnBool: false })
    assert.deepEqual(parsePromQL('-2 ^ 2').expr, { kind: 'negate', expr: pow(num(2), num(2)) })
    assert.deepEqual(parsePromQL('- 0.5 ^ -2').expr, { kind: 'negate', expr: pow(num(0.5), num(-2)) })
    assert.deepEqual(parsePromQL('+2 ^ 2').expr, pow(num(2), num(2)))
    assert.deepEqual(parsePromQL('1 - -2 ^ 2').expr, {
      kind: 'binary',
      op: '-',
      lhs: num(1),
      rhs: { kind: 'negate', expr: pow(num(2), num(2)) },
      returnBool: false,
    })
    // Not a power: the literal keeps its sign.
    assert.deepEqual(parsePromQL('-2 * 3').expr, {
      kind: 'binary',
      op: '*',
      lhs: num(-2),
      rhs: num(3),
      returnBool: false,
    })
  })

  test('aggregation keywords are case-insensitive, as in Prometheus', () => {
    assert.deepEqual(parsePromQL('SUM(x)').expr, parsePromQL('sum(x)').expr)
    assert.deepEqual(parsePromQL('Sum BY (job) (x)').expr, parsePromQL('sum by (job) (x)').expr)
    assert.deepEqual(parsePromQL('TopK(2, x)').expr, parsePromQL('topk(2, x)').expr)
  })

  test('an offset after a binary or unary expression belongs to its last operand, as in Prometheus', () => {
    const sel = (offsetMs: number) => ({ kind: 'vector', sel: { selector: { metric: 'x', matchers: [] }, offsetMs } })
    const matching = { on: false, labels: [] }
    assert.deepEqual(parsePromQL('x - x offset 5m').expr, {
      kind: 'binary',
      op: '-',
      lhs: sel(0),
      rhs: sel(300_000),
      returnBool: false,
      matching,
    })
    assert.deepEqual(parsePromQL('x + x * x offset 1m').expr, {
      kind: 'binary',
      op: '+',
      lhs: sel(0),
      rhs: { kind: 'binary', op: '*', lhs: sel(0), rhs: sel(60_000), returnBool: false, matching },
      returnBool: false,
      matching,
    })
    assert.deepEqual(parsePromQL('-x offset 5m').expr, { kind: 'negate', expr: sel(300_000) })
    assert.deepEqual(parsePromQL('x offset 5m - x').expr, {
      kind: 'binary',
      op: '-',
      lhs: sel(300_000),
      rhs: sel(0),
      returnBool: false,
      matching,
    })
    refused('(x - x) offset 5m', /offset modifier must be preceded by an instant vector selector/)
    refused('x - sum(x) offset 5m', /offset modifier must be preceded by an instant vector selector/)
  })

  test('string literals unquote as Go does', () => {
    assert.equal(unquote('"a\\"b\\n\\x41\\u00e9\\101"'), 'a"b\nAéA')
    assert.equal(unquote("'it\\'s'"), "it's")
    assert.equal(unquote('`raw\\n`'), 'raw\\n')
    assert.throws(() => unquote('"bad\\q"'), PromQLError)
    // \x and octal escapes are bytes: a run of them is UTF-8, as in a Go string.
    assert.equal(unquote('"\\xc3\\xa9t\\303\\251"'), 'été')
    assert.equal(unquote('"\\xf0\\x9f\\x99\\x82"'), '🙂')
    assert.throws(() => unquote('"\\xc3"'), /invalid UTF-8 in the byte escapes/)
    assert.throws(() => unquote('"\\xc3x"'), /invalid UTF-8 in the byte escapes/)
    assert.throws(() => unquote('"\\400"'), /invalid escape/)
    assert.throws(() => unquote('"\\ud800"'), /invalid escape/)
  })

  test('durations as Prometheus spells them', () => {
    assert.equal(parseDurationMs('1h30m'), 5_400_000)
    assert.equal(parseDurationMs('1y'), 365 * 86_400_000)
    assert.equal(parseDurationMs('90s'), 90_000)
    assert.equal(parseDurationMs('10ms'), 10)
    assert.equal(parseDurationMs('1m1h'), undefined)
    assert.equal(parseDurationMs('5'), undefined)
    assert.equal(parseDurationMs(''), undefined)
  })
})

describe('promql: API parameters and number formats', () => {
  test('times: unix seconds with fractions, RFC 3339', () => {
    assert.equal(parseTimeParam('1700000000', 'time'), 1_700_000_000_000)
    assert.equal(parseTimeParam('1700000000.123', 'time'), 1_700_000_000_123)
    assert.equal(parseTimeParam('1700000000.1235', 'time'), 1_700_000_000_124)
    assert.equal(parseTimeParam('2023-11-14T22:13:20Z', 'time'), 1_700_000_000_000)
    assert.equal(parseTimeParam('2023-11-14T22:13:20.5+01:00', 'time'), 1_700_000_000_500 - 3_600_000)
    assert.throws(
      () => parseTimeParam('yesterday', 'time'),
      (err: unknown) => err instanceof PromQLError && err.type === 'bad_data' && /"time"/.test(err.message),
    )
    assert.throws(() => parseTimeParam('', 'start'), PromQLError)
    // Days a month does not have, and hours past 23, are refused as Prometheus refuses them, not rolled over.
    for (const bad of [
      '2024-02-30T00:00:00Z',
      '2023-02-29T00:00:00Z',
      '2024-04-31T00:00:00Z',
      '2024-01-01T24:00:00Z',
      '2024-13-01T00:00:00Z',
    ]) {
      assert.throws(() => parseTimeParam(bad, 'time'), PromQLError, bad)
    }
    assert.equal(parseTimeParam('2024-02-29T23:59:59Z', 'time'), Date.UTC(2024, 1, 29, 23, 59, 59))
    // Prometheus' own first and last times, which its clients send for "all time", and seconds
    // past the range a sample can have, are taken as the ends of that range.
    assert.equal(parseTimeParam('-292273086-05-16T16:47:06Z', 'start'), Number.MIN_SAFE_INTEGER)
    assert.equal(parseTimeParam('292277025-08-18T07:12:54.999999999Z', 'end'), Number.MAX_SAFE_INTEGER)
    assert.equal(parseTimeParam('1e15', 'time'), Number.MAX_SAFE_INTEGER)
    assert.equal(parseTimeParam('-9.2e15', 'start'), Number.MIN_SAFE_INTEGER)
    assert.throws(() => parseTimeParam('1e999', 'time'), PromQLError)
  })

  test('durations: Prometheus syntax or float seconds', () => {
    assert.equal(parseDurationParam('15s', 'step'), 15_000)
    assert.equal(parseDurationParam('1m30s', 'step'), 90_000)
    assert.equal(parseDurationParam('2.5', 'step'), 2500)
    assert.equal(parseDurationParam('60', 'step'), 60_000)
    assert.throws(() => parseDurationParam('soon', 'step'), PromQLError)
  })

  test("values as Prometheus 2.42 writes them: Go's 'f' format, 'e' below 1e-6 and from 1e21 up", () => {
    assert.equal(formatValue(1), '1')
    assert.equal(formatValue(0.1), '0.1')
    assert.equal(formatValue(-2.5), '-2.5')
    assert.equal(formatValue(1e20), '100000000000000000000')
    assert.equal(formatValue(0.000001), '0.000001')
    // What /usr/bin/prometheus answered for 1e300 and 3.899e-8.
    assert.equal(formatValue(1e300), '1e+300')
    assert.equal(formatValue(3.899e-8), '3.899e-08')
    assert.equal(formatValue(1e21), '1e+21')
    assert.equal(formatValue(1.5e-7), '1.5e-07')
    assert.equal(formatValue(-1.234e-10), '-1.234e-10')
    assert.equal(formatValue(1.7976931348623157e308), '1.7976931348623157e+308')
    assert.equal(formatValue(Number.NaN), 'NaN')
    assert.equal(formatValue(Number.POSITIVE_INFINITY), '+Inf')
    assert.equal(formatValue(Number.NEGATIVE_INFINITY), '-Inf')
    assert.equal(formatValue(2 / 3), '0.6666666666666666')
  })

  test('timestamps as Prometheus writes them: seconds and milliseconds', () => {
    assert.equal(formatTime(1_700_000_000_000), '1700000000')
    assert.equal(formatTime(1_700_000_000_050), '1700000000.050')
    assert.equal(formatTime(1_700_000_000_500), '1700000000.500')
    assert.equal(formatTime(-1500), '-1.500')
  })
})
