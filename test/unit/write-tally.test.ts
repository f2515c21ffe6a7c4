import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { LevelNotMet, requiredReplicas, WriteTally } from '../../src/cluster/write-tally.js'

describe('write consistency levels', () => {
  it('need one, a majority or every owner', () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((rf) => [
        requiredReplicas('one', rf),
        requiredReplicas('quorum', rf),
        requiredReplicas('all', rf),
      ]),
      [
        [1, 1, 1],
        [1, 2, 2],
        [1, 2, 3],
        [1, 3, 4],
        [1, 3, 5],
      ],
    )
  })

  it('acknowledge once every series has enough owners, whatever the order of the parts', async () => {
    // Two series, three owners each; owner parts: x holds both, y only series 0, z only series 1.
    const tally = new WriteTally(2, 2, 3)
    let done = false
    void tally.done.then(() => {
      done = true
    })
    tally.ack([0, 1])
    await Promise.resolve()
    assert.equal(done, false, 'one owner is not a quorum')
    tally.ack([0])
    await Promise.resolve()
    assert.equal(done, false, 'series 1 still has one owner')
    tally.ack([1])
    await tally.done
  })

  it('fail as soon as a series can no longer reach its level, naming every owner that failed so far', async () => {
    const tally = new WriteTally(2, 2, 3)
    tally.ack([0, 1])
    tally.fail('y', [0], new Error('y is down'))
    tally.fail('z', [0], new Error('z is down'))
    await assert.rejects(tally.done, (err: unknown) => {
      assert.ok(err instanceof LevelNotMet)
      assert.equal(err.series, 0)
      assert.deepEqual(
        err.failures.map((f) => f.node),
        ['y', 'z'],
      )
      return true
    })
  })

  it('ignore parts that settle after the answer', async () => {
    const tally = new WriteTally(1, 1, 3)
    tally.ack([0])
    tally.fail('y', [0], new Error('late'))
    tally.fail('z', [0], new Error('late'))
    await tally.done
  })

  it('with ALL, one failed owner fails the write', async () => {
    const tally = new WriteTally(1, 3, 3)
    tally.ack([0])
    tally.ack([0])
    tally.fail('z', [0], new Error('z is down'))
    await assert.rejects(tally.done, LevelNotMet)
  })
})
