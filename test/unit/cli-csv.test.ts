import assert from 'node:assert/strict'
import { test } from 'node:test'
import { CsvReader, type CsvRecord, csvLine } from '../../src/cli/csv.js'
import { layoutOf, parseRow } from '../../src/cli/import.js'
import { parseTimestampCell } from '../../src/cli/time.js'

function readAll(text: string, chunk: number): CsvRecord[] {
  const reader = new CsvReader()
  const out = []
  for (let i = 0; i < text.length; i += chunk) out.push(...reader.push(text.slice(i, i + chunk)))
  out.push(...reader.end())
  return out
}

test('reads quoted fields, CRLF and line numbers whatever the chunk size', () => {
  const text = 'a,b\r\n"x,1","say ""hi"""\r\n"multi\nline",2\n3,\n'
  for (const chunk of [1, 2, 3, 7, 1000]) {
    assert.deepEqual(readAll(text, chunk), [
      { fields: ['a', 'b'], line: 1 },
      { fields: ['x,1', 'say "hi"'], line: 2 },
      { fields: ['multi\nline', '2'], line: 3 },
      { fields: ['3', ''], line: 5 },
    ])
  }
  assert.deepEqual(readAll('a,b', 1), [{ fields: ['a', 'b'], line: 1 }])
})

test('a malformed record names its line, and reading goes on at the next line', () => {
  for (const chunk of [1, 2, 5, 100]) {
    assert.deepEqual(readAll('a\nb"c,d\ne\n', chunk), [
      { fields: ['a'], line: 1 },
      { fields: [], line: 2, error: 'a quote inside an unquoted field (quote the whole field)' },
      { fields: ['e'], line: 3 },
    ])
    assert.deepEqual(readAll('a\r\n"b"c\r\n"x"\r\n', chunk), [
      { fields: ['a'], line: 1 },
      { fields: [], line: 2, error: 'text after the closing quote of a field' },
      { fields: ['x'], line: 3 },
    ])
    assert.deepEqual(readAll('a\n\n"open\nb\n', chunk), [
      { fields: ['a'], line: 1 },
      { fields: [''], line: 2 },
      { fields: [], line: 3, error: 'unterminated quoted field' },
    ])
    assert.deepEqual(readAll('a\nb"c', chunk), [
      { fields: ['a'], line: 1 },
      { fields: [], line: 2, error: 'a quote inside an unquoted field (quote the whole field)' },
    ])
  }
})

test('csvLine quotes what needs it and reads back', () => {
  const fields = ['plain', 'a,b', 'q"q', 'l\nl', '']
  assert.deepEqual(readAll(`${csvLine(fields)}\n`, 3)[0]?.fields, fields)
})

test('rows of the long and wide formats, and their errors', () => {
  const long = layoutOf(['metric', 'timestamp', 'value', 'host'], false, [])
  assert.deepEqual(parseRow(['cpu', '1000', '1.5', ''], long, 'ms'), [
    { metric: 'cpu', tags: [], ts: 1000, value: 1.5 },
  ])
  assert.match(String(parseRow(['cpu', '1000', 'x', 'a'], long, 'ms')), /value "x" is not a number/)
  assert.match(String(parseRow(['9cpu', '1000', '1', 'a'], long, 'ms')), /metric "9cpu"/)
  assert.match(String(parseRow(['cpu', '1000', '1'], long, 'ms')), /expected 4 fields, found 3/)
  const wide = layoutOf(['timestamp', 'host', 'cpu', 'mem'], true, ['host'])
  assert.deepEqual(parseRow(['2', 'a', '1', ''], wide, 's'), [
    { metric: 'cpu', tags: [{ key: 'host', value: 'a' }], ts: 2000, value: 1 },
  ])
  assert.throws(() => layoutOf(['metric', 'value'], false, []), /no timestamp column/)
  assert.throws(() => layoutOf(['timestamp', 'cpu'], true, ['host']), /no column for the tag host of --tags/)
  // The first column of a fixed name is that column; a later one is a tag (wide: a metric).
  const again = layoutOf(['metric', 'timestamp', 'value', 'host', 'value', 'metric'], false, [])
  assert.deepEqual(
    [again.metricCol, again.timestampCol, again.valueCol, again.tagCols.map((t) => `${t.key}@${t.col}`)],
    [0, 1, 2, ['host@3', 'value@4', 'metric@5']],
  )
  const wideAgain = layoutOf(['timestamp', 'host', 'host', 'timestamp'], true, ['host'])
  assert.deepEqual(
    [wideAgain.tagCols, wideAgain.metricCols],
    [
      [{ key: 'host', col: 1 }],
      [
        { metric: 'host', col: 2 },
        { metric: 'timestamp', col: 3 },
      ],
    ],
  )
  assert.throws(
    () => layoutOf(['metric', 'timestamp', 'value', 'host', 'host'], false, []),
    /header: column "host" appears twice/,
  )
  assert.throws(
    () => layoutOf(['metric', 'timestamp', 'value', 'bad key'], false, []),
    /"bad key" is not a valid tag name/,
  )
  assert.throws(
    () => layoutOf(['metric', 'timestamp', 'value', '__name__'], false, []),
    /"__name__" is not a valid tag name: "__name__" is reserved for the metric name/,
  )
})

test('timestamps: epoch integers in every precision and RFC 3339', () => {
  assert.equal(parseTimestampCell('1767225600', 's'), 1767225600000)
  assert.equal(parseTimestampCell('1767225600123456789', 'ns'), 1767225600123)
  assert.equal(parseTimestampCell('2026-01-01T00:00:00.1239Z', 'ms'), 1767225600123)
  assert.equal(parseTimestampCell('2026-01-01T01:00:00+01:00', 'ms'), 1767225600000)
  assert.match(String(parseTimestampCell('yesterday', 'ms')), /neither an integer in ms nor RFC 3339/)
})
