// RangeCursor, the one iterator a read of many series seeks in: whatever order and size its reads
// come in, each returns exactly the family's entries in its range, as a fresh iterator would.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { RocksStore } from '../../src/engine/rocks-store.js'

function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 0x1_0000_0000
  }
}

function key(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n)
  return b
}

describe('RangeCursor', () => {
  it('answers every read with the entries of its range, reads in key order or not, short or long', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-cursor-'))
    const store = new RocksStore(dir)
    try {
      await store.open(8 << 20)
      const random = rng(7)
      // Keys 0..3999 with gaps: runs of present keys, as series' blocks lie in the hot family.
      const present: number[] = []
      const batch = store.db.batch()
      for (let n = 0; n < 4_000; n++) {
        if (random() < 0.3) continue
        present.push(n)
        batch._put(key(n), Buffer.from(`v${n}`), { column: store.columns.hot })
      }
      await store.writeBatch(batch, false)
      // A key outside the cursor's range on either side.
      const outside = store.db.batch()
      outside._put(key(10_000), Buffer.from('after'), { column: store.columns.hot })
      await store.writeBatch(outside, false)
      const cursor = store.cursor(store.columns.hot, key(0), key(4_000))
      try {
        let at = 0
        for (let round = 0; round < 3_000; round++) {
          // Mostly reads further on, some back, some far ahead; ranges from empty to hundreds of keys.
          const r = random()
          const from =
            r < 0.7
              ? at + Math.floor(random() * 8)
              : r < 0.85
                ? Math.floor(random() * 4_000)
                : at + Math.floor(random() * 300)
          const to = from + Math.floor(random() < 0.9 ? random() * 12 : random() * 400)
          const expected = present.filter((n) => n >= from && n < Math.min(to, 4_000))
          // `most` at least what the range holds, as the engine passes it; sometimes exactly that.
          const most = random() < 0.3 ? Math.max(1, expected.length) : to - from + 1 + Math.floor(random() * 50)
          const got = cursor.read(key(from), key(to), most).map(([k, v]) => {
            const n = k.readUInt32BE(0)
            assert.equal(v.toString(), `v${n}`)
            return n
          })
          assert.deepEqual(got, expected, `read ${round}: [${from}, ${to}) with most ${most}`)
          at = to
        }
      } finally {
        await cursor.close()
      }
    } finally {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
