import assert from 'node:assert/strict'
import { test } from 'node:test'
import { exactSelector, formatSelector, parseSelector, SelectorSyntaxError } from '../../src/cli/selector.js'

test('parses PromQL selectors with every matcher op', () => {
  assert.deepEqual(parseSelector('cpu_usage{host="a", region=~"eu-.*",dc!="x",rack!~`r\\d+`,}'), {
    metric: 'cpu_usage',
    matchers: [
      { key: 'host', value: 'a', op: 'eq' },
      { key: 'region', value: 'eu-.*', op: 'regex' },
      { key: 'dc', value: 'x', op: 'neq' },
      { key: 'rack', value: 'r\\d+', op: 'not_regex' },
    ],
  })
  assert.deepEqual(parseSelector('  up  '), { metric: 'up', matchers: [] })
  assert.deepEqual(parseSelector('{__name__="up",job=\'a\\"b\'}'), {
    metric: 'up',
    matchers: [{ key: 'job', value: 'a"b', op: 'eq' }],
  })
})

test('a syntax error names the column and points at it', () => {
  const cases: Array<[string, number, RegExp]> = [
    ['cpu{host="a"', 13, /expected , or }/],
    ['cpu{host=="a"}', 10, /expected a quoted value/],
    ['cpu{host~"a"}', 9, /expected one of =, !=, =~, !~/],
    ['cpu{host="a}', 10, /unterminated string/],
    ['cpu{1host="a"}', 5, /expected a tag name/],
    ['{host="a"}', 1, /names no metric/],
    ['cpu{} x', 7, /unexpected "x"/],
    ['cpu{a="\\q"}', 8, /unknown escape/],
  ]
  for (const [input, column, reason] of cases) {
    assert.throws(
      () => parseSelector(input),
      (err: unknown) => {
        assert.ok(err instanceof SelectorSyntaxError, String(err))
        assert.equal(err.column, column, input)
        assert.match(err.message, reason)
        const [, shown, caret] = err.pointed().split('\n')
        assert.equal(caret?.indexOf('^'), (shown?.indexOf(input) ?? 0) + column - 1)
        return true
      },
    )
  }
})

test('exactSelector excludes series with more tags; formatSelector round-trips', () => {
  const sel = exactSelector('m', [{ key: 'a', value: '1' }], ['a', 'b'])
  assert.deepEqual(sel.matchers, [
    { key: 'a', value: '1', op: 'eq' },
    { key: 'b', value: '', op: 'eq' },
  ])
  const text = formatSelector({ metric: 'm', matchers: [{ key: 'k', value: 'a"b\\', op: 'regex' }] })
  assert.deepEqual(parseSelector(text), { metric: 'm', matchers: [{ key: 'k', value: 'a"b\\', op: 'regex' }] })
})
