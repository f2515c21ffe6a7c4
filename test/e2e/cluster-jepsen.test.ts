import assert from 'node:assert/strict'
import { it } from 'node:test'
import { describeReport, runJepsenSet } from './jepsen-kit.js'

/** V3_JEPSEN_SEED picks the fault schedule (npm run soak runs several); a failure prints its seed. */
const SEED = Number(process.env.V3_JEPSEN_SEED ?? '20260301')
/** V3_JEPSEN_LONG_MS keeps the writers going at least this long (a longer soak run); default: the faults alone. */
const MIN_WRITE_MS = Number(process.env.V3_JEPSEN_LONG_MS ?? '0')

it('loses no acknowledged point of concurrent QUORUM writers while one node is killed and restarted and another stopped for 10 s', {
  timeout: 280_000,
}, async (t) => {
  assert.ok(Number.isInteger(SEED), `V3_JEPSEN_SEED must be an integer, got ${process.env.V3_JEPSEN_SEED}`)
  t.diagnostic(`jepsen seed ${SEED} (rerun with V3_JEPSEN_SEED=${SEED})`)
  const report = await runJepsenSet({ seed: SEED, minWriteMs: MIN_WRITE_MS, log: (line) => t.diagnostic(line) })
  t.diagnostic(`jepsen result ${describeReport(report)}`)
  assert.ok(report.acked > 0, 'no write was acknowledged')
  assert.deepEqual(report.missingQuorum, [], `seed ${SEED}: acknowledged points missing at QUORUM`)

  // A coordinator killed while an owner's part is still in flight (before the peer timeout makes
  // it a hint) leaves that owner without the point: hints alone cannot heal it, repair must. Until
  // this build has `v3 cluster repair`, a loss here is reported as a TODO, not a failure.
  await t.test(
    'every node alone holds every acknowledged point once hints are delivered and repair has run',
    { todo: report.repaired ? false : 'v3 cluster repair is not in this build yet' },
    () => {
      assert.deepEqual(report.missingAlone, [], `seed ${SEED}: acknowledged points missing from a node's own copy`)
    },
  )
})
