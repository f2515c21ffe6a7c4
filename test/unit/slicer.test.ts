import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { SLICE_MS, Slicer } from '../../src/engine/slicer.js'

/** Holds the thread for `ms` of wall-clock time, as a piece of a call's synchronous work does. */
function work(ms: number): void {
  const end = performance.now() + ms
  while (performance.now() < end) {
    // spin
  }
}

describe('Slicer', () => {
  it('lets tasks of one call that run side by side share a slice between turns of the event loop', async () => {
    // A read of many series runs queryConcurrency (16) tasks on one slicer. Each used to start the
    // slice anew for itself when its turn came, so all of them ran a slice in every turn: 16 slices
    // (160 ms) of the loop held at a time.
    const TASKS = 16
    const UNIT_MS = 0.25
    const UNITS = 400
    const slicer = new Slicer(undefined)
    let units = 0
    const perTurn: number[] = []
    let turns = true
    let sinceTurn = 0
    const ticker = (): void => {
      perTurn.push(units - sinceTurn)
      sinceTurn = units
      if (turns) setImmediate(ticker)
    }
    setImmediate(ticker)
    await Promise.all(
      Array.from({ length: TASKS }, async () => {
        for (let i = 0; i < UNITS / TASKS; i++) {
          await slicer.pause()
          work(UNIT_MS)
          units++
        }
      }),
    )
    turns = false
    perTurn.push(units - sinceTurn)
    assert.equal(units, UNITS)
    // A slice holds SLICE_MS / UNIT_MS units (40), and the tasks that had passed their last pause
    // when it ran out each run one more unit (15): about 55, and the bound (72) leaves room. Each
    // task restarting the slice for itself ran all 400 units in one or two turns.
    const most = Math.max(...perTurn)
    const bound = SLICE_MS / UNIT_MS + 2 * TASKS
    assert.ok(most <= bound, `${most} units of work ran between two turns of the loop`)
    assert.ok(perTurn.filter((n) => n > 0).length >= Math.floor(UNITS / bound), JSON.stringify(perTurn))
  })

  it('stops a cancelled call at its next pause', async () => {
    const controller = new AbortController()
    const slicer = new Slicer({ signal: controller.signal })
    work(SLICE_MS)
    controller.abort()
    await assert.rejects(slicer.pause(), /cancelled or its deadline passed/)
  })
})
