// The gRPC wire keeps every NaN's bit pattern, both ways: Prometheus' staleness marker written by a
// client and read back by another must be the same 64 bits, as the engine keeps them.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { BinaryWriter } from '@bufbuild/protobuf/wire'
import {
  decodeSeriesList,
  decodeWriteRequest,
  encodeSeriesList,
  encodeWriteRequest,
} from '../../src/wire/series-codec.js'
import { bitsOf, doubles, NORMAL_NAN, OTHER_NAN, STALE_NAN } from '../fixtures/nan-values.js'

const BITS = [STALE_NAN, NORMAL_NAN, OTHER_NAN, 0x7ff0000000000000n, 0x8000000000000000n]
const series = {
  metric: 'm',
  tags: [{ key: 'k', value: 'v' }],
  timestamps: Float64Array.from(BITS, (_, i) => 1_000 + i),
  values: doubles(BITS),
}

test('a write request keeps NaN bit patterns, packed or one value at a time', () => {
  const packed = decodeWriteRequest(encodeWriteRequest([series], 0))
  assert.deepEqual(bitsOf(packed.series[0]!.values), BITS)

  // A generic protobuf writer may send each double as its own field (unpacked): read one by one.
  const w = new BinaryWriter()
  w.tag(1, 2).fork()
  w.tag(1, 2).string('m')
  w.tag(3, 2).fork()
  for (let i = 0; i < BITS.length; i++) w.int64(1_000 + i)
  w.join()
  const bytes = new Uint8Array(8)
  for (const bits of BITS) {
    new DataView(bytes.buffer).setBigUint64(0, bits, true)
    w.tag(4, 1).raw(bytes)
  }
  w.join()
  const unpacked = decodeWriteRequest(w.finish())
  assert.deepEqual(bitsOf(unpacked.series[0]!.values), BITS)
})

test('a query response keeps NaN bit patterns', () => {
  const [got] = decodeSeriesList(encodeSeriesList([series]))
  assert.deepEqual(bitsOf(got!.values), BITS)
})
