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

const sel = (value: string): string => `m{k="${value}"}`
const unquoted = (text: string): string | undefined => parseSelector(text).matchers[0]?.value

/** A seeded generator, so that a failing string can be found again. */
function random(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}

/** Every code point 0–0x9f, alone and between letters, the awkward ones, and seeded random strings. */
function awkwardStrings(): string[] {
  const special = [
    '\u2028',
    '\u2029',
    '\ufffd',
    '\ufeff',
    '\u00a0',
    '\u00ad',
    '\u200b',
    '\u202e',
    '\ue000',
    '😀',
    '👩‍👩‍👧',
    '🇫🇷',
    'é',
    'e\u0301',
    '日本',
    '\u{10ffff}',
    '\ud800',
    '\udfff',
    '"',
    "'",
    '`',
    '\\',
    '\\\\"',
    '}',
    ',',
    '{',
    '=~',
    ' ',
    '\\x41',
    '\\u0041',
    '\\101',
  ]
  const out = ['', 'plain', 'a b', '"}', '",k="x', '\\"', "'\\''"]
  for (let c = 0; c <= 0x9f; c++) {
    const ch = String.fromCharCode(c)
    out.push(ch, `a${ch}b`, `${ch}${ch}`)
  }
  for (const s of special) out.push(s, `a${s}b`, `${s}\u0001${s}`)
  const next = random(20240611)
  const pick = (n: number): number => Math.floor(next() * n)
  for (let i = 0; i < 3000; i++) {
    let s = ''
    for (let n = pick(12); n > 0; n--) {
      const kind = pick(5)
      if (kind === 0) s += special[pick(special.length)]
      else if (kind === 1) s += String.fromCharCode(pick(0xa0))
      else if (kind === 2) s += String.fromCodePoint(pick(0x110000))
      // Code units, so lone surrogates too.
      else if (kind === 3) s += String.fromCharCode(pick(0x10000))
      else s += String.fromCharCode(0x20 + pick(0x5f))
    }
    out.push(s)
  }
  return out
}

test('parseSelector reads back whatever formatSelector writes, for any string', () => {
  const ops = ['eq', 'neq', 'regex', 'not_regex'] as const
  const values = awkwardStrings()
  for (let i = 0; i < values.length; i++) {
    const value = values[i]!
    const selector = {
      metric: 'm',
      matchers: [
        { key: 'k', value, op: ops[i % ops.length]! },
        { key: 'after', value: `${value}}`, op: 'eq' as const },
      ],
    }
    const text = formatSelector(selector)
    assert.deepEqual(parseSelector(text), selector, `${JSON.stringify(value)} formatted as ${text}`)
  }
})

test('formatSelector writes one line of Go escapes, and nothing unprintable', () => {
  // Go's escapes (PromQL's), where \x only spells ASCII and \u no surrogate but a lone one.
  const goEscape = /\\(?:[abfnrtv"\\]|x[0-7][0-9a-f]|u[0-9a-f]{4}|U0010[0-9a-f]{4}|U000[0-9a-f]{5})/gu
  const printable = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]*$/u
  for (const value of awkwardStrings()) {
    const text = formatSelector({ metric: 'm', matchers: [{ key: 'k', value, op: 'eq' }] })
    const quoted = text.slice('m{k='.length, -1)
    const inner = quoted.slice(1, -1)
    assert.equal(quoted[0], '"', text)
    assert.ok(printable.test(text), `unprintable character in ${JSON.stringify(text)}`)
    const rest = inner.replace(goEscape, '')
    assert.ok(!rest.includes('\\') && !rest.includes('"'), `stray backslash or quote in ${text}`)
    for (const [, hex] of inner.matchAll(/\\u([0-9a-f]{4})/g)) {
      const code = Number.parseInt(hex!, 16)
      if (code >= 0xd800 && code < 0xe000) assert.ok(value.includes(String.fromCharCode(code)), text)
    }
  }
})

test('formatSelector writes the simplest form', () => {
  const cases: Array<[string, string]> = [
    ['a b.c-d', 'a b.c-d'],
    ['a\u0001b', 'a\\x01b'],
    ['a\bb', 'a\\bb'],
    ['\x07\b\f\n\r\t\v', '\\a\\b\\f\\n\\r\\t\\v'],
    ['\x00\x1b\x1f\x7f', '\\x00\\x1b\\x1f\\x7f'],
    ['\x80\x9f\u00a0\u00ad', '\\u0080\\u009f\\u00a0\\u00ad'],
    ['\u2028\u2029\ufeff\u202e', '\\u2028\\u2029\\ufeff\\u202e'],
    ['\u{e0001}\u{10ffff}', '\\U000e0001\\U0010ffff'],
    ['\ud800x\udc00', '\\ud800x\\udc00'],
    ['"\\\'`}{,=', '\\"\\\\\'`}{,='],
    ['é日本😀🇫🇷\ufffd', 'é日本😀🇫🇷\ufffd'],
  ]
  for (const [value, written] of cases) {
    assert.equal(formatSelector({ metric: 'm', matchers: [{ key: 'k', value, op: 'eq' }] }), sel(written))
  }
  assert.equal(formatSelector({ metric: 'm', matchers: [] }), 'm')
})

test('parseSelector reads every escape of PromQL string literals', () => {
  const cases: Array<[string, string]> = [
    [sel('\\a\\b\\f\\n\\r\\t\\v'), '\x07\b\f\n\r\t\v'],
    [sel('\\\\\\"'), '\\"'],
    [sel("\\'\\`"), "'`"],
    ["m{k='\\'\\\"'}", '\'"'],
    [sel('\\x41\\x7e\\x00\\x7F'), 'A~\x00\x7f'],
    [sel('\\xc3\\xa9\\xC3\\xA9'), 'éé'],
    [sel('\\xe2\\x82\\xac\\xf0\\x9f\\x98\\x80'), '€😀'],
    [sel('\\101\\000\\177'), 'A\x00\x7f'],
    [sel('\\303\\251'), 'é'],
    [sel('\\xc3\\251'), 'é'],
    [sel('\\xf4\\x8f\\xbf\\xbf'), '\u{10ffff}'],
    [sel('\\u00e9\\u2028\\uFFFD\\u0000'), 'é\u2028\ufffd\x00'],
    [sel('\\U0001F600\\U0010ffff\\U00000041'), '😀\u{10ffff}A'],
    // Go refuses surrogates; V3 takes them so that a lone one in a string round-trips.
    [sel('\\ud800\\uDFFF'), '\ud800\udfff'],
    [sel('\\ud83d\\ude00'), '😀'],
    [sel('a\\x41\\u0041\\101\\101a'), 'aAAAAa'],
    ['m{k=`\\x41\\n`}', '\\x41\\n'],
    ["m{k='\\x41\\n'}", 'A\n'],
  ]
  for (const [text, value] of cases) assert.equal(unquoted(text), value, text)
})

test('a bad escape names its column', () => {
  const cases: Array<[string, number, RegExp]> = [
    [sel('ab\\q'), 8, /unknown escape \\q/],
    [sel('\\8'), 6, /unknown escape \\8/],
    [sel('\\X41'), 6, /unknown escape \\X/],
    ['m{k="\\', 6, /unknown escape \\$/],
    [sel('\\x4'), 9, /\\x needs 2 hexadecimal digits, found "\\""/],
    [sel('\\xg1'), 8, /\\x needs 2 hexadecimal digits, found "g"/],
    ['m{k="\\x', 8, /\\x needs 2 hexadecimal digits, found the end of the selector/],
    [sel('\\u12'), 10, /\\u needs 4 hexadecimal digits, found "\\""/],
    [sel('\\u12z4'), 10, /\\u needs 4 hexadecimal digits, found "z"/],
    [sel('\\U0001F60'), 15, /\\U needs 8 hexadecimal digits/],
    [sel('a\\U00110000'), 7, /\\U00110000 is above U\+10FFFF/],
    [sel('\\1'), 8, /octal escape needs 3 digits, found "\\""/],
    [sel('\\018'), 9, /octal escape needs 3 digits, found "8"/],
    [sel('\\400'), 6, /\\400 is above \\377/],
    [sel('\\x80'), 6, /\\x80 is a UTF-8 continuation byte, but no character was begun/],
    [sel('\\xc3\\xa9\\xa9'), 14, /\\xa9 is a UTF-8 continuation byte/],
    [sel('\\xff'), 6, /\\xff is a byte that never appears in UTF-8/],
    [sel('\\xc0\\x80'), 6, /\\xc0 is a byte that never appears in UTF-8/],
    [sel('\\xc3a'), 10, /character begun by \\xc3 at column 6 needs 1 more byte escape .*found "a"/],
    [sel('\\xe2\\x82'), 14, /begun by \\xe2 at column 6 needs 1 more byte escape .*found "\\""/],
    [sel('\\xe2\\n'), 10, /begun by \\xe2 at column 6 needs 2 more byte escapes .*found the escape \\n/],
    [sel('\\xc3\\u00a9'), 10, /begun by \\xc3 at column 6 needs 1 more .*found the escape \\u/],
    [sel('\\xc3\\x41'), 10, /\\x41 cannot continue the UTF-8 character begun by \\xc3 at column 6/],
    [sel('\\xe0\\x9f\\xbf'), 10, /\\x9f cannot continue .*\\xa0–\\xbf/], // Overlong.
    [sel('\\355\\240\\200'), 10, /\\240 cannot continue .* begun by \\355 .*\\x80–\\x9f/], // A surrogate.
    [sel('\\xf0\\x8f\\xbf\\xbf'), 10, /\\x8f cannot continue .*\\x90–\\xbf/], // Overlong.
    [sel('\\xf4\\x90\\x80\\x80'), 10, /\\x90 cannot continue .*\\x80–\\x8f/], // Above U+10FFFF.
    ["m{k='\\xc3'}", 10, /found "'"/],
  ]
  for (const [input, column, reason] of cases) {
    assert.throws(
      () => parseSelector(input),
      (err: unknown) => {
        assert.ok(err instanceof SelectorSyntaxError, String(err))
        assert.match(err.message, reason, input)
        assert.equal(err.column, column, input)
        assert.match(err.message, new RegExp(`^bad selector at column ${column}: `))
        return true
      },
    )
  }
})
