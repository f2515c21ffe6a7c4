// InfluxDB line protocol parsing: escaping, every field type and precision, the lines it skips,
// bad lines named by number, and a large body.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ValidationError } from '../../src/model/errors.js'
import { prng } from '../../src/model/prng.js'
import type { SeriesWrite } from '../../src/model/types.js'
import { LINE_PIECE_BYTES, PrefixCache, parseLinePrecision, parseLineProtocol } from '../../src/server/line-protocol.js'

const NOW = Date.UTC(2024, 0, 1, 12, 34, 56, 789)

function plain(series: readonly SeriesWrite[]) {
  return series.map((s) => ({
    metric: s.metric,
    tags: s.tags.map((t) => `${t.key}=${t.value}`),
    timestamps: Array.from(s.timestamps),
    values: Array.from(s.values),
  }))
}

function lineError(text: string, line: number, pattern: RegExp): void {
  assert.throws(
    () => parseLineProtocol(text, 'ns', NOW),
    (err: unknown) => {
      assert.ok(err instanceof ValidationError, String(err))
      assert.equal(err.violations[0]?.field, `line ${line}`)
      assert.match(err.message, pattern)
      return true
    },
  )
}

test('each field becomes <measurement>_<field> with the line tags; lines of one series are grouped', () => {
  const parsed = parseLineProtocol(
    'cpu,host=a,dc=eu usage=1.5,idle=2 1700000000000000000\ncpu,host=a,dc=eu usage=2.5 1700000000001000000\n',
    'ns',
    NOW,
  )
  assert.deepEqual(plain(parsed.series), [
    { metric: 'cpu_usage', tags: ['host=a', 'dc=eu'], timestamps: [1700000000000, 1700000000001], values: [1.5, 2.5] },
    { metric: 'cpu_idle', tags: ['host=a', 'dc=eu'], timestamps: [1700000000000], values: [2] },
  ])
  assert.deepEqual(parsed.firstLines, [1, 1])
  assert.equal(parsed.points, 3)
})

test('escaping: measurement comma and space, tag and field key comma, equals and space', () => {
  const parsed = parseLineProtocol('my\\ cpu\\,x,ho\\=st=a\\ b\\,c,k=v\\=w f\\ 1\\,2\\=3=7 1000000\n', 'ns', NOW)
  assert.deepEqual(plain(parsed.series), [
    { metric: 'my cpu,x_f 1,2=3', tags: ['ho=st=a b,c', 'k=v=w'], timestamps: [1], values: [7] },
  ])
})

test('field types: float, integer, unsigned and every spelling of a boolean, stored as floats', () => {
  const bools = ['t', 'T', 'true', 'True', 'TRUE', 'f', 'F', 'false', 'False', 'FALSE']
  const fields = [
    'a=1',
    'b=-1.5e3',
    'c=.5',
    'd=-42i',
    'e=9007199254740993i',
    'g=7u',
    ...bools.map((b, i) => `b${i}=${b}`),
  ].join(',')
  const parsed = parseLineProtocol(`m ${fields} 0`, 'ns', NOW)
  const values = Object.fromEntries(parsed.series.map((s) => [s.metric, s.values[0]]))
  assert.deepEqual(values, {
    m_a: 1,
    m_b: -1500,
    m_c: 0.5,
    m_d: -42,
    m_e: 9007199254740992,
    m_g: 7,
    ...Object.fromEntries(bools.map((_, i) => [`m_b${i}`, i < 5 ? 1 : 0])),
  })
})

test('every precision, the timestamp rounded down to the millisecond', () => {
  const at = (ts: string, p: string) => {
    const precision = parseLinePrecision(p)
    assert.ok(precision !== undefined, p)
    return parseLineProtocol(`m v=1 ${ts}`, precision, NOW).series[0]?.timestamps[0]
  }
  assert.equal(at('1700000000123456789', 'ns'), 1700000000123)
  assert.equal(at('1700000000123456789', 'n'), 1700000000123)
  assert.equal(at('1700000000123456', 'us'), 1700000000123)
  assert.equal(at('1700000000123456', 'u'), 1700000000123)
  assert.equal(at('1700000000123', 'ms'), 1700000000123)
  assert.equal(at('1700000000', 's'), 1700000000000)
  assert.equal(at('28333333', 'm'), 28333333 * 60_000)
  assert.equal(at('472222', 'h'), 472222 * 3_600_000)
  assert.equal(at('-1500', 'ns'), -1)
  assert.equal(at('-1000000', 'ns'), -1)
  assert.equal(at('999', 'ns'), 0)
  assert.equal(parseLinePrecision('ks'), undefined)
  assert.equal(parseLinePrecision(null), 'ns')
})

test('a line without a timestamp takes the clock at receipt, cut to the precision', () => {
  const at = (p: 'ns' | 'ms' | 's' | 'm' | 'h') => parseLineProtocol('m v=1', p, NOW).series[0]?.timestamps[0]
  assert.equal(at('ns'), NOW)
  assert.equal(at('ms'), NOW)
  assert.equal(at('s'), Date.UTC(2024, 0, 1, 12, 34, 56))
  assert.equal(at('m'), Date.UTC(2024, 0, 1, 12, 34))
  assert.equal(at('h'), Date.UTC(2024, 0, 1, 12))
})

test('comments, blank lines, CRLF and stray whitespace are skipped', () => {
  const parsed = parseLineProtocol(
    '# header\r\n\r\n   \n  m,t=x v=1 1000000\r\n\t# indented comment\nm,t=x v=2 2000000  \r\n',
    'ns',
    NOW,
  )
  assert.deepEqual(plain(parsed.series), [{ metric: 'm_v', tags: ['t=x'], timestamps: [1, 2], values: [1, 2] }])
  assert.equal(parseLineProtocol('', 'ns', NOW).series.length, 0)
})

test('a bad line is named by its number with the problem', () => {
  lineError('m v=1\nm s="a b" 1\n', 2, /line 2: field "s" is a string/)
  lineError('m v=1,s="x"', 1, /field "s" is a string/)
  lineError('m v=1\n\n# c\nm\n', 4, /line 4: has no fields/)
  lineError('m v=abc', 1, /field "v" is not a number/)
  lineError('m v=1.2.3', 1, /field "v" is not a valid number/)
  lineError('m v=1xi', 1, /field "v" is not a valid integer/)
  lineError('m v=-1u', 1, /field "v" is not a valid unsigned integer/)
  // 64-bit ranges, as InfluxDB checks them: the bounds pass, one past them does not.
  lineError('m v=99999999999999999999i', 1, /field "v" is out of range for a 64-bit integer/)
  lineError('m v=9223372036854775808i', 1, /field "v" is out of range for a 64-bit integer/)
  lineError('m v=-9223372036854775809i', 1, /field "v" is out of range for a 64-bit integer/)
  lineError('m v=18446744073709551616u', 1, /field "v" is out of range for a 64-bit unsigned integer/)
  const bounds = parseLineProtocol(
    'm a=9223372036854775807i,b=-9223372036854775808i,c=18446744073709551615u 1000000',
    'ns',
    NOW,
  )
  assert.deepEqual(
    plain(bounds.series).map((x) => x.values[0]),
    [2 ** 63, -(2 ** 63), 2 ** 64],
  )
  lineError('m v=', 1, /field "v" has no value/)
  lineError('m v', 1, /field "v" has no "=value"/)
  lineError('m v=1,', 1, /ends its fields with a comma/)
  lineError('m =1', 1, /a field key is empty/)
  lineError('m,t v=1', 1, /tag "t" has no "=value"/)
  lineError('m,t= v=1', 1, /tag "t" has an empty value/)
  lineError('m,t=a,t=b v=1', 1, /tag "t" appears twice/)
  lineError(',t=a v=1', 1, /the measurement is empty/)
  lineError('m v=1 12ab', 1, /timestamp "12ab" is not an integer/)
  lineError('m v=1 99999999999999999999999999', 1, /is not an integer in range/)
  lineError('m v=NaN', 1, /field "v" is not a number/)
})

test('a body of 100,000 lines parses into its series, every point kept', () => {
  const lines: string[] = []
  for (let i = 0; i < 100_000; i++) {
    lines.push(`disk,host=h${i % 100},dev=sda used=${i}i,free=${i / 2} ${(1_700_000_000_000 + i) * 1_000_000}`)
  }
  const started = performance.now()
  const parsed = parseLineProtocol(lines.join('\n'), 'ns', NOW)
  const ms = performance.now() - started
  assert.equal(parsed.series.length, 200)
  assert.equal(parsed.points, 200_000)
  const used = parsed.series.find((s) => s.metric === 'disk_used' && s.tags[0]?.value === 'h7')
  assert.ok(used)
  assert.equal(used.timestamps.length, 1000)
  assert.equal(used.timestamps[1], 1_700_000_000_107)
  assert.equal(used.values[1], 107)
  // Generous, so that a loaded machine passes; a regex or split per line would still be far inside.
  assert.ok(ms < 5000, `parsing took ${ms} ms`)
})

test('series in a repeating order, an order that changes, and prefixes that begin alike all parse to their own series', () => {
  // The parser checks each line's prefix against the one that followed the previous line's last
  // time; every way that guess can be wrong must still find the line's own series.
  const prefixes = ['cpu,host=a', 'cpu,host=ab', 'cpu,host=a,dc=x', 'cpu,host=b', 'mem,host=a']
  const random = prng(7)
  const lines: string[] = []
  const expected = new Map<string, number[]>()
  for (let round = 0; round < 60; round++) {
    // Ten rounds in one order, then a shuffled order for every round, then a new series joins.
    const order = round < 10 ? prefixes : [...prefixes].sort(() => random() - 0.5)
    const all = round < 40 ? order : [...order, 'cpu,host=c']
    for (const prefix of all) {
      const value = lines.length
      lines.push(`${prefix} v=${value} ${(1_700_000_000_000 + lines.length) * 1_000_000}`)
      expected.set(prefix, [...(expected.get(prefix) ?? []), value])
    }
  }
  const parsed = parseLineProtocol(lines.join('\n'), 'ns', NOW)
  const got = new Map(
    parsed.series.map((s) => [
      `${s.metric.replace(/_v$/, '')},${s.tags.map((t) => `${t.key}=${t.value}`).join(',')}`,
      Array.from(s.values),
    ]),
  )
  assert.deepEqual(got, expected)
  assert.equal(parsed.points, lines.length)
})

test('a prefix cache hands out the same frozen tags for the same series in later bodies', () => {
  const cache = new PrefixCache()
  const first = parseLineProtocol('m,host=a,dc=x v=1 1000000\n', 'ns', NOW, cache).series[0]
  const second = parseLineProtocol('m,host=a,dc=x v=2,w=3 2000000\n', 'ns', NOW, cache).series
  assert.ok(first && second[0] && second[1])
  assert.equal(second[0].tags, first.tags)
  assert.equal(second[1].tags, first.tags)
  assert.ok(Object.isFrozen(first.tags))
  assert.deepEqual(plain(second), [
    { metric: 'm_v', tags: ['host=a', 'dc=x'], timestamps: [2], values: [2] },
    { metric: 'm_w', tags: ['host=a', 'dc=x'], timestamps: [2], values: [3] },
  ])
  // A bad prefix is refused every time, never remembered.
  for (let i = 0; i < 2; i++) {
    assert.throws(() => parseLineProtocol('m,t=a,t=b v=1', 'ns', NOW, cache), /tag "t" appears twice/)
  }
})

test('plain decimals of any length read exactly as Number() reads them; one too large is refused', () => {
  const random = (seed: number) => () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    return seed / 2 ** 31
  }
  const r = random(7)
  const texts = [
    '0',
    '-0',
    '-0.0',
    '007',
    '1.5',
    '0.1',
    '0.3',
    '123456789012345',
    '1234567890.12345',
    '9007199254740993',
  ]
  for (let i = 0; i < 5000; i++) {
    const digits = 1 + Math.floor(r() * 20)
    let text = ''
    for (let d = 0; d < digits; d++) text += String(Math.floor(r() * 10))
    const point = Math.floor(r() * (digits + 1))
    if (point > 0 && point < digits) text = `${text.slice(0, point)}.${text.slice(point)}`
    texts.push(r() < 0.5 ? `-${text}` : text)
  }
  for (let i = 0; i < 1000; i++) texts.push(String(r() * 100), String(-r() * 1e-7), String(r() * 1e15))
  const body = texts.map((t, i) => `m,k=v x=${t},y=${t} ${i + 1}000000`).join('\n')
  const parsed = parseLineProtocol(body, 'ns', NOW)
  const [x, y] = parsed.series
  assert.ok(x && y)
  for (let i = 0; i < texts.length; i++) {
    assert.ok(Object.is(x.values[i], Number(texts[i])), `x=${texts[i]} read as ${x.values[i]}`)
    assert.ok(Object.is(y.values[i], Number(texts[i])), `y=${texts[i]} read as ${y.values[i]}`)
  }
  lineError(`m v=1\nm v=${'9'.repeat(400)}`, 2, /field "v" is not a valid number/)
  assert.deepEqual(
    plain(parseLineProtocol('m v=1.,w=-.5', 'ns', NOW).series).map((s) => s.values),
    [[1], [-0.5]],
  )
})

test('decimals of 16 to 19 digits, halfway cases and those next to them read exactly as Number() reads them', () => {
  const r = prng(19)
  const texts: string[] = []
  const digitsOf = (n: number): string => {
    let t = String(1 + Math.floor(r() * 9))
    for (let d = 1; d < n; d++) t += String(Math.floor(r() * 10))
    return t
  }
  for (let i = 0; i < 60_000; i++) {
    const t = digitsOf(16 + Math.floor(r() * 4))
    const point = Math.floor(r() * t.length)
    texts.push(point === 0 ? t : `${t.slice(0, point)}.${t.slice(point)}`)
  }
  // Exact halfway points between two doubles, written in 16 to 19 digits, and one unit either side.
  const view = new DataView(new ArrayBuffer(8))
  const parts = (x: number): { m: bigint; e: number } => {
    view.setFloat64(0, x)
    const word = view.getBigUint64(0)
    return { m: (word & 0xfffffffffffffn) | 0x10000000000000n, e: Number((word >> 52n) & 0x7ffn) - 1075 }
  }
  for (let i = 0; i < 20_000; i++) {
    const x = (1 + r()) * 2 ** Math.floor(r() * 60)
    view.setFloat64(0, x)
    view.setBigUint64(0, view.getBigUint64(0) + 1n)
    const a = parts(x)
    const b = parts(view.getFloat64(0))
    const e = Math.min(a.e, b.e)
    // (x + next) / 2 = (a.m * 2^(a.e - e) + b.m * 2^(b.e - e)) * 2^(e - 1), as an exact decimal.
    const twice = (a.m << BigInt(a.e - e)) + (b.m << BigInt(b.e - e))
    const scale = Math.max(0, 1 - e)
    const digits = (scale === 0 ? twice << BigInt(e - 1) : twice * 5n ** BigInt(scale)).toString()
    const intLength = digits.length - scale
    const trimmed = digits.replace(/0+$/, '')
    if (intLength < 1 || trimmed.length > 19) continue
    for (const delta of [0n, 1n, -1n]) {
      const shown = (BigInt(digits.slice(0, Math.max(trimmed.length, intLength))) + delta).toString()
      if (shown.length < 16 || shown.length > 19) continue
      const cut = shown.length - (Math.max(trimmed.length, intLength) - intLength)
      texts.push(cut < shown.length ? `${shown.slice(0, cut)}.${shown.slice(cut)}` : shown)
    }
  }
  assert.ok(texts.length > 60_000 + 10_000, `${texts.length - 60_000} halfway texts`)
  const body = texts.map((t, i) => `m,k=v x=${t},y=-${t} ${i + 1}000000`).join('\n')
  const [x, y] = parseLineProtocol(body, 'ns', NOW).series
  assert.ok(x && y)
  for (let i = 0; i < texts.length; i++) {
    assert.ok(Object.is(x.values[i], Number(texts[i])), `x=${texts[i]} read as ${x.values[i]}`)
    assert.ok(Object.is(y.values[i], -Number(texts[i])), `y=-${texts[i]} read as ${y.values[i]}`)
  }
})

test('lines of one series that list their fields in another order, fewer or more, or with longer keys', () => {
  const parsed = parseLineProtocol(
    ['m a=1,b=2 1000000', 'm b=3,a=4 2000000', 'm a=5 3000000', 'm ab=6,a=7,c=8 4000000', 'm a=9,b=10 5000000'].join(
      '\n',
    ),
    'ns',
    NOW,
  )
  assert.deepEqual(plain(parsed.series), [
    { metric: 'm_a', tags: [], timestamps: [1, 2, 3, 4, 5], values: [1, 4, 5, 7, 9] },
    { metric: 'm_b', tags: [], timestamps: [1, 2, 5], values: [2, 3, 10] },
    { metric: 'm_ab', tags: [], timestamps: [4], values: [6] },
    { metric: 'm_c', tags: [], timestamps: [4], values: [8] },
  ])
  assert.deepEqual(parsed.firstLines, [1, 1, 4, 4])
})

test('escapes and quotes after plain lines, and plain lines after them, are read alike', () => {
  const parsed = parseLineProtocol(
    ['m,h=a v=1 1000000', 'm,h=a\\ b v\\,w=2 2000000', 'm,h=a v=3 3000000', 'm,h=a\\ b v\\,w=4 4000000'].join('\n'),
    'ns',
    NOW,
  )
  assert.deepEqual(plain(parsed.series), [
    { metric: 'm_v', tags: ['h=a'], timestamps: [1, 3], values: [1, 3] },
    { metric: 'm_v,w', tags: ['h=a b'], timestamps: [2, 4], values: [2, 4] },
  ])
  lineError('m v=1 1\nm v=2 2\nm v=3,s="x y" 3\nm v=4 4\n', 3, /line 3: field "s" is a string/)
  lineError('m v=1 1\nm v=2 2\nm v=3 3\nm v=4,s="x" 4\n', 4, /line 4: field "s" is a string/)
})

test('a body given as bytes is read in line-aligned pieces: the same series as its text, UTF-8 intact, lines numbered on', () => {
  // Lines of varied length with non-ASCII tag values and CRLF ends, so that piece boundaries fall
  // next to multi-byte characters and carriage returns; one line longer than a piece; no final newline.
  const random = prng(11)
  const lines: string[] = []
  for (let i = 0; i < 20_000; i++) {
    const host = i % 3 === 0 ? `höst-${i % 40}-日本` : `host-${i % 40}`
    const pad = 'x'.repeat(1 + Math.floor(random() * 30))
    lines.push(`cpu,host=${host},pad=${pad} v=${i / 4},w=${i}i ${(1_700_000_000_000 + i) * 1_000_000}`)
  }
  const wide = Array.from({ length: 8000 }, (_, k) => `f${k}=${k}`).join(',')
  assert.ok(wide.length > LINE_PIECE_BYTES)
  lines.splice(7000, 0, `wide,host=a ${wide} 1700000000000000000`)
  const text = lines.join('\r\n')
  const bytes = Buffer.from(text, 'utf8')
  assert.ok(bytes.length > 10 * LINE_PIECE_BYTES)
  const fromBytes = parseLineProtocol(bytes, 'ns', NOW)
  const fromText = parseLineProtocol(text, 'ns', NOW)
  assert.deepEqual(plain(fromBytes.series), plain(fromText.series))
  assert.deepEqual(fromBytes.firstLines, fromText.firstLines)
  assert.equal(fromBytes.points, 2 * 20_000 + 8000)
  assert.ok(fromBytes.series.some((s) => s.tags[0]?.value === 'höst-0-日本'))

  // A bad line far into the body is named by its number in the whole body.
  const bad = [...lines]
  bad[15_000] = 'cpu,host=a v="text"'
  assert.throws(
    () => parseLineProtocol(Buffer.from(bad.join('\n'), 'utf8'), 'ns', NOW),
    (err: unknown) => err instanceof ValidationError && err.violations[0]?.field === 'line 15001',
  )
})
