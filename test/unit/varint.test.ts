import assert from 'node:assert/strict'
import { test } from 'node:test'
import { BinaryWriter } from '@bufbuild/protobuf/wire'
import { varintSize, writeVarint } from '../../src/model/varint.js'

test('varints are written as protobuf writes them, at every length boundary up to 2^53 - 1', () => {
  const values = [0, 1, Number.MAX_SAFE_INTEGER]
  for (let bits = 7; bits <= 52; bits += 7) values.push(2 ** bits - 1, 2 ** bits, 2 ** bits + 1)
  values.push(2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 52 + 12345)
  for (const n of values) {
    const expected = new BinaryWriter().uint64(n).finish()
    const buf = new Uint8Array(12).fill(0xff)
    const end = writeVarint(buf, 2, n)
    assert.deepEqual(buf.subarray(2, end), expected, `varint of ${n}`)
    assert.equal(varintSize(n), expected.length, `size of ${n}`)
  }
})
