import assert from 'node:assert/strict'
import { it } from 'node:test'
import { describeReport, runJepsenSet } from './jepsen-kit.js'

/** V3_JEPSEN_SEED picks the fault schedule (npm run soak runs several); a failure prints its seed. */
const SEED = Number(process.env.V3_JEPSEN_SEED ?? '20260301')
/** V3_JEPSEN_LONG_MS keeps the writers going at least this long (a longer soak run); default: the faults alone. */
const MIN_WRITE_MS = Number(process.env.V3_JEPSEN_LONG_MS ?? '0')

it('loses no acknowledged point of QUORUM writers through a kill -9, a restart and a 10 s SIGSTOP: at QUORUM, and on each node alone at ONE after hints and repair', {
  // The faults and checks take under 280 s; a longer soak run adds its writing time.
  timeout: MIN_WRITE_MS + 280_000,
}, async (t) => {
  assert.ok(Number.isInteger(SEED), `V3_JEPSEN_SEED must be an integer, got ${process.env.V3_JEPSEN_SEED}`)
  t.diagnostic(`jepsen seed ${SEED} (rerun with V3_JEPSEN_SEED=${SEED})`)
  const report = await runJepsenSet({ seed: SEED, minWriteMs: MIN_WRITE_MS, log: (line) => t.diagnostic(line) })
  t.diagnostic(`jepsen result ${describeReport(report)}`)
  assert.ok(report.acked > 0, 'no write was acknowledged')
  assert.deepEqual(report.missingQuorum, [], `seed ${SEED}: acknowledged points missing at QUORUM`)
  assert.deepEqual(report.missingAlone, [], `seed ${SEED}: acknowledged points missing from a node's own copy`)
})
