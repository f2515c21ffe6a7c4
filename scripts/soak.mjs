// npm run soak: the Jepsen-style set test (test/e2e/cluster-jepsen.test.ts) once per seed, one
// after another, then a summary per seed: points acknowledged, unknown, lost (at QUORUM, and from a
// node's own copy read alone at ONE), the points repair moved, and the wall time. Exits non-zero when a
// run lost an acknowledged point or failed. Not part of npm test.
//   npm run soak                          the five default seeds
//   npm run soak -- --seeds 7,8,9         these seeds
//   npm run soak -- --random 10           ten seeds drawn now (printed, to replay one)
//   npm run soak -- --long 300            one more run, writers going for at least 300 s
// The summary is also written to bench/results/soak.md.
import { spawn } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'

const DEFAULT_SEEDS = [20260301, 11, 23, 37, 51]
const TEST = 'test/e2e/cluster-jepsen.test.ts'

const { values: args } = parseArgs({
  options: {
    seeds: { type: 'string' },
    random: { type: 'string' },
    long: { type: 'string' },
  },
})

function positiveInteger(flag, text) {
  const n = Number(text)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${flag} takes a positive integer, got ${text}`)
  return n
}

const seeds =
  args.seeds !== undefined
    ? args.seeds.split(',').map((s) => {
        const n = Number(s)
        if (!Number.isInteger(n)) throw new Error(`--seeds takes integers, got ${s}`)
        return n
      })
    : args.random !== undefined
      ? Array.from({ length: positiveInteger('random', args.random) }, () => randomInt(1, 2 ** 31))
      : DEFAULT_SEEDS
const runs = seeds.map((seed) => ({ seed, longMs: 0 }))
if (args.long !== undefined) runs.push({ seed: seeds[0], longMs: positiveInteger('long', args.long) * 1000 })

/** Runs the test file for one seed; resolves with its exit code, result line and TAP output. */
function runOnce(seed, longMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--test', '--test-reporter=tap', '--test-timeout=900000', TEST],
      {
        env: { ...process.env, V3_JEPSEN_SEED: String(seed), V3_JEPSEN_LONG_MS: String(longMs) },
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    )
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      out += chunk
    })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, out }))
  })
}

/** The key=value fields of the test's `jepsen result` diagnostic line, undefined when absent. */
function resultFields(out) {
  const line = /^# jepsen result (.*)$/m.exec(out)?.[1]
  if (line === undefined) return undefined
  const fields = {}
  for (const m of line.matchAll(/(\w+)=(\[[^\]]*\]|\S+)/g)) fields[m[1]] = m[2]
  return fields
}

const rows = []
let failed = false
console.log(`soak: ${runs.length} runs of ${TEST}, seeds ${runs.map((r) => r.seed).join(', ')}`)
for (const { seed, longMs } of runs) {
  const t0 = Date.now()
  const { code, out } = await runOnce(seed, longMs)
  const seconds = (Date.now() - t0) / 1000
  const f = resultFields(out)
  const lostQuorum = Number(f?.lost_quorum ?? Number.NaN)
  const lostAlone = Number(f?.lost_alone ?? Number.NaN)
  const ok = code === 0 && lostQuorum === 0 && lostAlone === 0
  if (!ok) {
    failed = true
    // The TAP output names what failed; the diagnostics carry the fault schedule.
    process.stdout.write(out)
  }
  const row = {
    seed,
    long: longMs > 0 ? `${longMs / 1000} s` : '',
    acked: f?.acked ?? '?',
    unknown: f?.unknown ?? '?',
    lostQuorum: f?.lost_quorum ?? '?',
    lostAlone: f?.lost_alone ?? '?',
    repairPoints: f?.repair_points ?? '?',
    seconds: seconds.toFixed(1),
    outcome: ok ? 'pass' : code === 0 ? 'LOST' : `FAIL (exit ${code})`,
  }
  rows.push(row)
  console.log(
    `seed ${seed}${row.long ? ` (long, ${row.long})` : ''}: acked ${row.acked}, unknown ${row.unknown}, lost at QUORUM ${row.lostQuorum}, lost alone at ONE ${row.lostAlone}, points moved by repair ${row.repairPoints}, ${row.seconds} s: ${row.outcome}`,
  )
}

const md = [
  `Jepsen-style set test (${TEST}), ${new Date().toISOString()}: 3 nodes, R = 3, 4 writers at QUORUM, one node killed with SIGKILL and restarted, another stopped with SIGSTOP for 10 s.`,
  '',
  '| seed | long run | acknowledged | unknown | lost at QUORUM | lost from a node alone at ONE | points moved by repair | wall time, s | outcome |',
  '|---|---|---|---|---|---|---|---|---|',
  ...rows.map(
    (r) =>
      `| ${r.seed} | ${r.long} | ${r.acked} | ${r.unknown} | ${r.lostQuorum} | ${r.lostAlone} | ${r.repairPoints} | ${r.seconds} | ${r.outcome} |`,
  ),
  '',
].join('\n')
console.log(`\n${md}`)
await mkdir('bench/results', { recursive: true })
await writeFile('bench/results/soak.md', md)
process.exit(failed ? 1 : 0)
