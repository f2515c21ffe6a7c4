import assert from 'node:assert/strict'
import { test } from 'node:test'
import { alignedTable, displayWidth } from '../../src/cli/query.js'
import { parseTimestampCell } from '../../src/cli/time.js'
import { formatValue, parseValue } from '../../src/cli/values.js'
import { MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, parseRfc3339 } from '../../src/model/timestamps.js'

function fromBits(bits: bigint): number {
  return new Float64Array(new BigUint64Array([bits]).buffer)[0]!
}

function bitsOf(value: number): bigint {
  return new BigUint64Array(new Float64Array([value]).buffer)[0]!
}

test('a value cell reads back to the same 64 bits', () => {
  const values = [
    0,
    -0,
    1.5,
    -2.675,
    0.1,
    1e308,
    -Number.MAX_VALUE,
    5e-324,
    2 ** 53 + 2,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    Number.NaN,
    fromBits(0x7ff0000000000002n),
    fromBits(0xfff8000000000000n),
    fromBits(0x7fffffffffffffffn),
  ]
  for (const v of values) {
    const cell = formatValue(v)
    const back = parseValue(cell)
    assert.equal(typeof back, 'number', `${cell}: ${back}`)
    assert.equal(bitsOf(back as number), bitsOf(v), cell)
  }
  assert.equal(formatValue(-0), '-0')
  assert.equal(formatValue(Number.NaN), 'NaN')
  assert.equal(formatValue(fromBits(0x7ff0000000000002n)), 'NaN(0x7ff0000000000002)')
  assert.equal(formatValue(Number.NEGATIVE_INFINITY), '-Infinity')
})

test('a value cell is a decimal number, NaN, NaN(0x…) of a NaN, or ±Infinity', () => {
  assert.equal(parseValue(' 7 '), 7)
  assert.equal(parseValue('1e3'), 1000)
  for (const bad of ['', 'oops', '0x10', '-0X10', '0b11', '0o7', 'nan', 'inf', '1,5']) {
    assert.equal(parseValue(bad), `value ${JSON.stringify(bad)} is not a number`)
  }
  assert.equal(
    parseValue('NaN(0x3ff0000000000000)'),
    'value "NaN(0x3ff0000000000000)": the bits are not those of a NaN',
  )
  assert.equal(
    parseValue('NaN(0x7ff0000000000000)'),
    'value "NaN(0x7ff0000000000000)": the bits are not those of a NaN',
  )
  assert.equal(parseValue('NaN(0x7ff00000000002)'), 'value "NaN(0x7ff00000000002)" is not a number')
})

test('dates before year 0 take an expanded year on the command line, not in PromQL', () => {
  const earliest = new Date(MIN_TIMESTAMP_MS).toISOString()
  assert.match(earliest, /^-0000\d\d-/)
  assert.equal(parseTimestampCell(earliest, 'ms'), MIN_TIMESTAMP_MS)
  assert.equal(parseTimestampCell(new Date(MAX_TIMESTAMP_MS).toISOString(), 'ms'), MAX_TIMESTAMP_MS)
  assert.ok(Number.isNaN(parseRfc3339(earliest)))
  assert.equal(parseRfc3339('+002026-01-01T00:00:00Z', true), Date.UTC(2026, 0, 1))
  assert.ok(Number.isNaN(parseRfc3339('-000000-01-01T00:00:00Z', true)))
  // Year 0 is a leap year; years 0 to 99 are not 1900 to 1999.
  assert.equal(parseRfc3339('0000-02-29T00:00:00Z'), Date.parse('0000-02-29T00:00:00Z'))
  assert.ok(Number.isNaN(parseRfc3339('0001-02-29T00:00:00Z')))
  assert.equal(parseRfc3339('0004-02-29T12:00:00.5Z'), Date.parse('0004-02-29T12:00:00.500Z'))
})

test('a table pads by terminal columns and keeps each row on one line', () => {
  assert.equal(displayWidth('abc'), 3)
  assert.equal(displayWidth('日本'), 4)
  assert.equal(displayWidth('e\u0301'), 1)
  assert.equal(displayWidth('🙂x'), 3)
  const table = alignedTable(
    ['host', 'value'],
    [
      ['日本', '1'],
      ['a\nb', '22'],
      ['c\u0001', '3'],
    ],
    new Set([1]),
  )
  assert.equal(table, ['host   value', '日本       1', 'a\\nb      22', 'c\\x01      3', ''].join('\n'))
})
