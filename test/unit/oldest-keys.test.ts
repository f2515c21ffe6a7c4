import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { OldestKeys } from '../../src/engine/caches.js'
import { prng } from '../../src/model/prng.js'

describe('OldestKeys', () => {
  test('gives the oldest key of the Map, whatever was added, deleted or moved to the end since', () => {
    // The caches' eviction order: insertion order, a hit moving its key to the end (delete + set).
    const random = prng(7)
    const below = (n: number): number => Math.floor(random() * n)
    const map = new Map<number, number>()
    const oldest = new OldestKeys(map)
    const order: number[] = []
    let next = 0
    for (let step = 0; step < 50_000; step++) {
      const op = below(10)
      if (op < 4 || order.length === 0) {
        map.set(next, next)
        order.push(next++)
      } else if (op < 6) {
        const key = order[below(order.length)]!
        map.delete(key)
        map.set(key, key)
        order.splice(order.indexOf(key), 1)
        order.push(key)
      } else if (op < 7) {
        const key = order[below(order.length)]!
        map.delete(key)
        order.splice(order.indexOf(key), 1)
      } else {
        const key = oldest.next()
        assert.equal(key, order[0], `step ${step}`)
        map.delete(key!)
        order.shift()
      }
    }
    // Taken to the last key, then given new ones: the iterator that reached the end begins again.
    for (const key of order) {
      assert.equal(oldest.next(), key)
      map.delete(key)
    }
    assert.equal(oldest.next(), undefined)
    map.set(-1, -1)
    map.set(-2, -2)
    assert.equal(oldest.next(), -1)
  })
})
