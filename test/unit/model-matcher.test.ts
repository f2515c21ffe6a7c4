import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { ValidationError } from '../../src/model/errors.js'
import { compileSelector, type SelectorOptions } from '../../src/model/matcher.js'
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

function fieldsOf(selector: Selector, options?: SelectorOptions): string[] {
  try {
    compileSelector(selector, options)
  } catch (err) {
    assert.ok(err instanceof ValidationError)
    return err.violations.map((v) => v.field)
  }
  assert.fail('expected a ValidationError')
}

describe('compileSelector: validation', () => {
  test('metric well formed, and required where asked', () => {
    assert.deepEqual(fieldsOf({ metric: '', matchers: [] }, { requireMetric: true }), ['selector.metric'])
    assert.deepEqual(fieldsOf({ metric: 'cpu usage', matchers: [] }), ['selector.metric'])
    // Empty selects every metric.
    assert.equal(compileSelector({ metric: '', matchers: [] }).onlyMetric, undefined)
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
      assert.equal(err.violations[0]!.description, '"(a" is not a valid regular expression: missing closing ): `(a`')
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
    assert.deepEqual(fieldsOf({ metric: '', matchers: [m('', 'regex', '[')] }, { requireMetric: true }), [
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

/** The one violation compiling a selector with this regex matcher raises. */
function regexViolation(pattern: string, op: MatchOp = 'regex'): { field: string; description: string } {
  try {
    compileSelector({ metric: 'cpu', matchers: [m('host', 'eq', 'a'), m('host', op, pattern)] })
  } catch (err) {
    assert.ok(err instanceof ValidationError)
    assert.equal(err.violations.length, 1)
    return err.violations[0]!
  }
  assert.fail(`expected ${JSON.stringify(pattern.slice(0, 40))} to be rejected`)
}

describe('compileSelector: RE2 regexes', () => {
  test('a pattern nesting 10,000 groups deep (60,001 bytes) is rejected as too long, not compiled', () => {
    const pattern = `${'(?:a|'.repeat(10_000)}h${')'.repeat(10_000)}`
    assert.equal(pattern.length, 60_001)
    const v = regexViolation(pattern)
    assert.equal(v.field, 'selector.matchers[1].value')
    assert.match(v.description, /is 60001 bytes long, more than the limit of 4096$/)
    // The description quotes the start of the pattern only.
    assert.ok(v.description.length < 200)
  })

  test('deep nesting within the length bound compiles or is rejected, never overflows the stack', () => {
    const nonCapturing = `${'(?:a|'.repeat(680)}h${')'.repeat(680)}`
    assert.ok(matches([m('host', 'regex', nonCapturing)], { host: 'h' }))
    assert.ok(matches([m('host', 'regex', nonCapturing)], { host: 'a' }))
    assert.ok(!matches([m('host', 'regex', nonCapturing)], { host: 'ah' }))
    const capturing = `${'('.repeat(2000)}a${')'.repeat(2000)}`
    assert.equal(regexViolation(capturing).field, 'selector.matchers[1].value')
    const flat = `${'(?:'.repeat(1000)}a${')'.repeat(1000)}`
    assert.ok(matches([m('host', 'regex', flat)], { host: 'a' }))
  })

  test('a pattern that would compile to too many instructions is rejected before compiling', () => {
    const t0 = performance.now()
    const v = regexViolation('.{0,1000}'.repeat(400))
    assert.equal(v.field, 'selector.matchers[1].value')
    assert.match(v.description, /is too large: it compiles to about \d+ instructions, more than the limit of 2000$/)
    // Compiling it would take seconds and hundreds of MiB; the estimate answers at once.
    assert.ok(performance.now() - t0 < 1000)
    assert.ok(matches([m('host', 'regex', 'a{1000}')], { host: 'a'.repeat(1000) }))
  })

  test('(a+)+$ answers at once instead of backtracking', () => {
    const value = `${'a'.repeat(40)}!`
    assert.ok(!matches([m('v', 'regex', '(a+)+$')], { v: value }))
    assert.ok(matches([m('v', 'not_regex', '(a+)+$')], { v: value }))
    assert.ok(matches([m('v', 'regex', '(a+)+$')], { v: 'a'.repeat(40) }))
    assert.ok(!matches([m('v', 'regex', '(a|aa)+b')], { v: 'a'.repeat(5000) }))
  })

  test('syntax RE2 does not have is rejected naming the field', () => {
    for (const [pattern, reason] of [
      ['(?=x)', 'invalid or unsupported Perl syntax: `(?=`'],
      ['(?!x)', 'invalid or unsupported Perl syntax: `(?!`'],
      ['(a)\\1', 'invalid escape sequence: `\\1`'],
      ['a++', 'invalid nested repetition operator: `++`'],
      ['a{1001}', 'invalid repeat count: `{1001}`'],
      ['[z-a]', 'invalid character class range: `z-a`'],
    ] as const) {
      const v = regexViolation(pattern, 'not_regex')
      assert.equal(v.field, 'selector.matchers[1].value')
      assert.equal(v.description, `${JSON.stringify(pattern)} is not a valid regular expression: ${reason}`)
    }
    // Lookbehind is refused too, whatever the parser calls it.
    assert.equal(regexViolation('(?<=x)a').field, 'selector.matchers[1].value')
  })

  test('RE2 syntax JavaScript lacks', () => {
    assert.ok(matches([m('host', 'regex', '\\pL+\\d')], { host: 'hôte1' }))
    assert.ok(matches([m('host', 'regex', '(?i)WEB-[[:digit:]]+')], { host: 'web-12' }))
    assert.ok(matches([m('host', 'regex', '\\Qa.b\\E')], { host: 'a.b' }))
    assert.ok(!matches([m('host', 'regex', '\\Qa.b\\E')], { host: 'axb' }))
    assert.ok(matches([m('host', 'regex', '(?P<name>x)y')], { host: 'xy' }))
  })

  test('anchoring holds on every path', () => {
    const cases: [string, string, boolean][] = [
      ['h0[12]', 'h01', true],
      ['h0[12]', 'h012', false],
      ['h0[12]', 'xh01', false],
      ['h0[12]+', 'h0121', true],
      ['h0[12]+', 'xh01', false],
      ['h0[12]+', 'h01x', false],
      ['a|b|c', 'ab', false],
      ['a|bc*', 'abc', false],
      ['eu-.*', 'us-eu-1', false],
      ['.*-1', 'eu-1x', false],
      ['.*x.*', 'yyy', false],
      ['^a$', 'a', true],
      ['a$|b', 'b', true],
      ['a\\z', 'a', true],
      ['', '', true],
      ['', 'a', false],
      ['a|', '', true],
    ]
    for (const [pattern, value, want] of cases) {
      assert.equal(matches([m('host', 'regex', pattern)], { host: value }), want, `${pattern} on ${value}`)
      assert.equal(matches([m('host', 'not_regex', pattern)], { host: value }), !want, `!${pattern} on ${value}`)
    }
    assert.equal(regexViolation('a)|(b').field, 'selector.matchers[1].value')
    assert.equal(regexViolation('.*)|(.*').field, 'selector.matchers[1].value')
  })

  test('. matches newlines and one code point on every path', () => {
    for (const pattern of ['.*', '.+', 'a.*', '.*b', '.*\n.*', 'a.b', '(?:a.b)+']) {
      assert.ok(matches([m('note', 'regex', pattern)], { note: 'a\nb' }), pattern)
    }
    assert.ok(matches([m('icon', 'regex', 'x.y')], { icon: 'x😀y' }))
    assert.ok(!matches([m('icon', 'regex', 'x..y')], { icon: 'x😀y' }))
    assert.ok(matches([m('icon', 'regex', '.+😀')], { icon: 'a😀' }))
    assert.ok(!matches([m('icon', 'regex', '.+😀')], { icon: '😀' }))
  })
})

describe('compileSelector: the metric name', () => {
  test('matchers on __name__ compare the metric, anchored, with or without a metric', () => {
    const any = (matchers: Matcher[]) => compileSelector({ metric: '', matchers })
    assert.ok(any([]).matchesSeries('cpu', []))
    assert.ok(any([m('__name__', 'eq', 'cpu')]).matchesSeries('cpu', []))
    assert.ok(!any([m('__name__', 'eq', 'cpu')]).matchesSeries('cpu_idle', []))
    assert.ok(any([m('__name__', 'neq', 'cpu')]).matchesSeries('mem', []))
    assert.ok(any([m('__name__', 'regex', 'cpu|mem')]).matchesSeries('mem', []))
    assert.ok(!any([m('__name__', 'regex', 'cpu')]).matchesSeries('cpu_idle', []))
    assert.ok(!any([m('__name__', 'not_regex', 'c.*')]).matchesSeries('cpu', []))
    assert.ok(any([m('__name__', 'not_regex', 'c.*')]).matchesSeries('mem', []))
    // A tag named __name__ is not what the matcher looks at.
    assert.ok(!any([m('__name__', 'eq', 'x')]).matchesSeries('cpu', tags({ __name__: 'x' })))
    const cpu = compileSelector({ metric: 'cpu', matchers: [m('__name__', 'regex', 'c.*'), m('host', 'eq', 'a')] })
    assert.ok(cpu.matchesSeries('cpu', tags({ host: 'a' })))
    assert.ok(!cpu.matchesSeries('cpu', tags({ host: 'b' })))
    assert.ok(!cpu.matchesMetric('cx'))
    // The index plan leaves __name__ to matchesMetric.
    assert.deepEqual(cpu.positiveEquals, [{ key: 'host', value: 'a' }])
    assert.deepEqual(cpu.residual, [])
  })

  test('the one metric a selector names', () => {
    assert.equal(compileSelector({ metric: 'cpu', matchers: [] }).onlyMetric, 'cpu')
    assert.equal(compileSelector({ metric: '', matchers: [m('__name__', 'eq', 'mem')] }).onlyMetric, 'mem')
    assert.equal(compileSelector({ metric: '', matchers: [m('__name__', 'regex', 'mem')] }).onlyMetric, undefined)
    assert.equal(compileSelector({ metric: '', matchers: [m('__name__', 'eq', '')] }).onlyMetric, undefined)
  })
})
