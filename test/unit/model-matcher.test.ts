import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { ValidationError } from '../../src/model/errors.js'
import { compileSelector } from '../../src/model/matcher.js'
import type { Matcher, MatchOp, Selector, Tag } from '../../src/model/types.js'

function m(key: string, op: MatchOp, value: string): Matcher {
  return { key, op, value }
}

function tags(record: Record<string, string>): Tag[] {
  return Object.entries(record)
    .map(([key, value]) => ({ key, value }))
    .sort((a, b) => (a.key < b.key ? -1 : 1))
}

function matches(matchers: Matcher[], record: Record<string, string>): boolean {
  return compileSelector({ metric: 'cpu', matchers }).matches(tags(record))
}

function fieldsOf(selector: Selector): string[] {
  try {
    compileSelector(selector)
  } catch (err) {
    assert.ok(err instanceof ValidationError)
    return err.violations.map((v) => v.field)
  }
  assert.fail('expected a ValidationError')
}

describe('compileSelector: validation', () => {
  test('metric required and well formed', () => {
    assert.deepEqual(fieldsOf({ metric: '', matchers: [] }), ['selector.metric'])
    assert.deepEqual(fieldsOf({ metric: 'cpu usage', matchers: [] }), ['selector.metric'])
  })

  test('matcher keys well formed', () => {
    assert.deepEqual(fieldsOf({ metric: 'cpu', matchers: [m('host', 'eq', 'a'), m('', 'eq', 'a')] }), [
      'selector.matchers[1].key',
    ])
    assert.deepEqual(fieldsOf({ metric: 'cpu', matchers: [m('9h', 'neq', 'a')] }), ['selector.matchers[0].key'])
  })

  test('a regex that does not compile, with the reason', () => {
    try {
      compileSelector({ metric: 'cpu', matchers: [m('host', 'regex', 'a'), m('host', 'not_regex', '(a')] })
      assert.fail('expected a ValidationError')
    } catch (err) {
      assert.ok(err instanceof ValidationError)
      assert.equal(err.violations.length, 1)
      assert.equal(err.violations[0]!.field, 'selector.matchers[1].value')
      assert.equal(err.violations[0]!.description, '"(a" is not a valid regular expression: Unterminated group')
    }
  })

  test('a regex cannot close the anchoring group', () => {
    assert.deepEqual(fieldsOf({ metric: 'cpu', matchers: [m('host', 'regex', 'a)|(b')] }), [
      'selector.matchers[0].value',
    ])
  })

  test('an unknown op', () => {
    const bad = { key: 'host', value: 'a', op: 'unspecified' } as unknown as Matcher
    assert.deepEqual(fieldsOf({ metric: 'cpu', matchers: [bad] }), ['selector.matchers[0].op'])
  })

  test('every violation listed', () => {
    assert.deepEqual(fieldsOf({ metric: '', matchers: [m('', 'regex', '[')] }), [
      'selector.metric',
      'selector.matchers[0].key',
      'selector.matchers[0].value',
    ])
  })
})

describe('compileSelector: matching', () => {
  test('no matchers match every series of the metric', () => {
    assert.ok(matches([], {}))
    assert.ok(matches([], { host: 'a' }))
  })

  test('equality and inequality', () => {
    assert.ok(matches([m('host', 'eq', 'a')], { host: 'a' }))
    assert.ok(!matches([m('host', 'eq', 'a')], { host: 'b' }))
    assert.ok(!matches([m('host', 'eq', 'a')], {}))
    assert.ok(matches([m('host', 'neq', 'a')], { host: 'b' }))
    assert.ok(!matches([m('host', 'neq', 'a')], { host: 'a' }))
  })

  test('a missing tag compares as the empty string', () => {
    assert.ok(matches([m('host', 'neq', 'a')], { region: 'eu' }))
    assert.ok(matches([m('host', 'eq', '')], { region: 'eu' }))
    assert.ok(!matches([m('host', 'eq', '')], { host: 'a' }))
    assert.ok(matches([m('host', 'neq', '')], { host: 'a' }))
    assert.ok(!matches([m('host', 'neq', '')], {}))
    assert.ok(matches([m('host', 'regex', '.*')], {}))
    assert.ok(!matches([m('host', 'regex', '.+')], {}))
    assert.ok(matches([m('host', 'not_regex', 'a.*')], {}))
  })

  test('regexes are fully anchored', () => {
    assert.ok(matches([m('host', 'regex', 'h0[12]')], { host: 'h01' }))
    assert.ok(!matches([m('host', 'regex', 'h0[12]')], { host: 'h012' }))
    assert.ok(!matches([m('host', 'regex', 'h0[12]')], { host: 'xh01' }))
    assert.ok(matches([m('host', 'regex', 'a|b')], { host: 'b' }))
    assert.ok(!matches([m('host', 'regex', 'a|b')], { host: 'ab' }))
    assert.ok(matches([m('region', 'regex', 'eu-.*')], { region: 'eu-west' }))
    assert.ok(!matches([m('region', 'regex', 'eu-.*')], { region: 'us-eu-west' }))
  })

  test('not_regex is the negation, also anchored', () => {
    assert.ok(!matches([m('host', 'not_regex', 'h0[12]')], { host: 'h01' }))
    assert.ok(matches([m('host', 'not_regex', 'h0[12]')], { host: 'h012' }))
  })

  test('.* matches values with newlines and . matches one code point', () => {
    assert.ok(matches([m('note', 'regex', '.*')], { note: 'two\nlines' }))
    assert.ok(matches([m('icon', 'regex', '.')], { icon: '😀' }))
  })

  test('all matchers must hold', () => {
    const selector = [m('region', 'regex', 'eu-.*'), m('host', 'neq', 'a')]
    assert.ok(matches(selector, { region: 'eu-1', host: 'b' }))
    assert.ok(!matches(selector, { region: 'eu-1', host: 'a' }))
    assert.ok(!matches(selector, { region: 'us-1', host: 'b' }))
  })
})

describe('compileSelector: index plan', () => {
  test('positive equalities go to the posting lists, the rest is checked afterwards', () => {
    const compiled = compileSelector({
      metric: 'cpu',
      matchers: [
        m('region', 'eq', 'eu'),
        m('host', 'neq', 'a'),
        m('dc', 'eq', ''),
        m('rack', 'regex', 'r.*'),
        m('env', 'eq', 'prod'),
      ],
    })
    assert.equal(compiled.metric, 'cpu')
    assert.equal(compiled.matchers.length, 5)
    assert.deepEqual(compiled.positiveEquals, [
      { key: 'region', value: 'eu' },
      { key: 'env', value: 'prod' },
    ])
    assert.deepEqual(
      compiled.residual.map((r) => `${r.key} ${r.op} ${r.value}`),
      ['host neq a', 'dc eq ', 'rack regex r.*'],
    )
    // A candidate from the posting lists already has region=eu and env=prod: only the rest is checked.
    assert.ok(compiled.matchesResidual(tags({ host: 'b', rack: 'r1' })))
    assert.ok(!compiled.matchesResidual(tags({ host: 'b', rack: 'r1', dc: 'x' })))
    assert.ok(!compiled.matches(tags({ host: 'b', rack: 'r1' })))
    assert.ok(compiled.matches(tags({ region: 'eu', env: 'prod', host: 'b', rack: 'r1' })))
  })

  test('matchesValue tests one value', () => {
    const [eq, re] = compileSelector({ metric: 'cpu', matchers: [m('a', 'eq', 'x'), m('b', 'regex', 'x+')] }).matchers
    assert.ok(eq!.matchesValue('x'))
    assert.ok(!eq!.matchesValue(''))
    assert.ok(re!.matchesValue('xxx'))
    assert.ok(!re!.matchesValue('xy'))
  })
})
