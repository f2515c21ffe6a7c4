import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { SLICE_MS, Slicer, TurnGate } from '../../src/engine/slicer.js'

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

describe('TurnGate', () => {
  it('lets large pieces of work that arrive together run one at a time, with timers and I/O between', async () => {
    // Peer writes read off one socket, or client writes of thousands of series, arrive in one turn of
    // the loop; each piece of their work runs for tens of milliseconds. Run back to back, they held a
    // cluster node's loop for a second; between two of them, the loop must turn.
    const gate = new TurnGate()
    let timerRuns = 0
    const timer = setInterval(() => timerRuns++, 1)
    const seen: number[] = []
    try {
      await Promise.all(
        Array.from({ length: 6 }, async () => {
          await gate.enter()
          seen.push(timerRuns)
          work(5)
        }),
      )
    } finally {
      clearInterval(timer)
    }
    // Every piece after the first saw the timer run since the one before it: each runs 5 ms, so the
    // 1 ms timer is due whenever the loop turns.
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! > seen[i - 1]!, JSON.stringify(seen))
  })

  it('lets a piece in at once when none ran since the loop last turned', async () => {
    const gate = new TurnGate()
    const order: string[] = []
    setImmediate(() => order.push('turn'))
    await gate.enter()
    order.push('piece')
    // The gate is free again once the loop has turned: two immediates after the one the piece set
    // (a timer of a few ms would not do: on a loaded machine it can fire before the loop turns).
    await new Promise((resolve) => setImmediate(resolve))
    await new Promise((resolve) => setImmediate(resolve))
    setImmediate(() => order.push('turn'))
    await gate.enter()
    order.push('piece')
    assert.deepEqual(order, ['piece', 'turn', 'piece'])
  })

  it('fails a call cancelled while it waited, before its piece runs', async () => {
    const gate = new TurnGate()
    const controller = new AbortController()
    await gate.enter()
    const waiting = gate.enter({ signal: controller.signal })
    controller.abort()
    await assert.rejects(waiting, /cancelled or its deadline passed/)
    // The next caller still gets its turn.
    await gate.enter()
  })
})
