import assert from 'node:assert/strict'
import { test } from 'node:test'
import { fullCollector, IdleReclaimer } from '../../src/server/idle-reclaim.js'

test('collects once calls stop after the resident set grew, and not while calls go on', async () => {
  let resident = 100
  let collected = 0
  const r = new IdleReclaimer(
    () => {
      collected++
      resident = 100
    },
    { minGrowthBytes: 10, residentBytes: () => resident },
  )
  resident = 150
  r.touch()
  assert.equal(r.check(), false, 'a call in the last interval')
  r.touch()
  assert.equal(r.check(), false, 'still busy')
  assert.equal(r.check(), true, 'a quiet interval after growth')
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(collected, 2, 'the second collection follows on the next turn')
  assert.equal(r.check(), false, 'nothing grew since')
  resident = 105
  assert.equal(r.check(), false, 'growth under the threshold')
})

test('V8 full collection is available without --expose-gc, and the global stays as it was', () => {
  const hadGc = 'gc' in globalThis
  const gc = fullCollector()
  assert.equal(typeof gc, 'function')
  gc?.()
  assert.equal('gc' in globalThis, hadGc)
})
