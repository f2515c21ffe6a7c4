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
    { minGrowthBytes: 10, residentBytes: () => resident, loopUtilization: () => 0 },
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

test('does not collect while the event loop works on something other than calls', () => {
  let collected = 0
  let utilization = 0.4
  let resident = 100
  const r = new IdleReclaimer(
    () => {
      collected++
    },
    { minGrowthBytes: 10, residentBytes: () => resident, loopUtilization: () => utilization },
  )
  resident = 500
  // No gRPC call, but a cluster node storing forwarded writes keeps its loop busy.
  assert.equal(r.check(), false, 'busy loop')
  assert.equal(r.check(), false, 'still busy')
  utilization = 0.01
  assert.equal(r.check(), true, 'quiet at last')
  assert.equal(collected, 1)
})

test('V8 full collection is available without --expose-gc, and the global stays as it was', () => {
  const hadGc = 'gc' in globalThis
  const gc = fullCollector()
  assert.equal(typeof gc, 'function')
  gc?.()
  assert.equal('gc' in globalThis, hadGc)
})
