/**
 * Regex matcher benchmark: the time to test one tag value, for the old matcher (V8's RegExp,
 * `^(?:p)$` with the `su` flags), re2js alone (RE2's full match, no fast path) and the matcher the
 * engine uses now (src/model/regex.ts: a fast path where the pattern allows one, re2js otherwise),
 * on the common patterns of issue 14 and a few that need the general path. Also the time to compile
 * a pattern, which every query pays once per matcher.
 * Run: npm run bench -- --regex, or node --import tsx bench/regex-bench.ts
 *
 * Values: 1,000 typical tag values (host names, `h01`-style ids, regions, single letters, words),
 * each pattern tested against all of them. Figures are the best of 3 × 7 rounds of about 50 ms each,
 * the three ways alternated.
 */
import { fileURLToPath } from 'node:url'
import { RE2JS } from 're2js'
import { compileValueRegex } from '../src/model/regex.js'

const REGIONS = ['eu-west-1', 'eu-central-1', 'us-east-1', 'us-west-2', 'ap-south-1', 'sa-east-1']
const WORDS = ['alpha', 'bravo', 'xray', 'box', 'index', 'delta', 'echo', 'foxtrot', 'golf', 'taxi']

function values(): string[] {
  const out: string[] = []
  for (let i = 0; out.length < 1000; i++) {
    out.push(`host_${i}`, `h0${i % 30}`, REGIONS[i % REGIONS.length] as string)
    out.push(String.fromCharCode(97 + (i % 6)), WORDS[i % WORDS.length] as string, `web-${i}`, `db-${i % 50}`)
  }
  return out.slice(0, 1000)
}

interface Case {
  readonly pattern: string
  /** Left out for V8 when its backtracking would not answer. */
  readonly skipV8?: boolean
  readonly values?: readonly string[]
}

const CASES: readonly Case[] = [
  { pattern: 'h0[12]' },
  { pattern: 'a|b|c' },
  { pattern: '.*x.*' },
  { pattern: 'eu-.*' },
  { pattern: 'host_1|host_22|web-3|db-4' },
  { pattern: '.*-1' },
  { pattern: 'web-[0-9]+' },
  { pattern: '(?:eu|us)-.*-1' },
  { pattern: '[a-z]+_[0-9]{1,3}' },
  { pattern: '(a+)+$', values: [`${'a'.repeat(20)}!`] },
  { pattern: '(a+)+$', values: [`${'a'.repeat(40)}!`], skipV8: true },
]

/** Nanoseconds per test: the best of 7 rounds, each of about 50 ms of tests over the whole list. */
function nsPerTest(test: (value: string) => boolean, list: readonly string[]): number {
  let sink = 0
  const pass = (reps: number): number => {
    const t0 = process.hrtime.bigint()
    for (let r = 0; r < reps; r++) for (const v of list) if (test(v)) sink++
    return Number(process.hrtime.bigint() - t0)
  }
  const once = pass(1)
  const reps = Math.max(1, Math.round(50e6 / Math.max(once, 1)))
  let best = Number.POSITIVE_INFINITY
  for (let round = 0; round < 7; round++) best = Math.min(best, pass(reps) / (reps * list.length))
  if (sink < 0) console.log(sink)
  return best
}

/** Microseconds to compile a pattern: the best of 7 rounds of 200 compilations. */
function usPerCompile(compile: () => unknown): number {
  let best = Number.POSITIVE_INFINITY
  for (let round = 0; round < 7; round++) {
    const t0 = process.hrtime.bigint()
    for (let r = 0; r < 200; r++) compile()
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 200 / 1000)
  }
  return best
}

export function regexBench(): void {
  const pool = values()
  const rows = [
    '| pattern | values | V8 RegExp ns/test | re2js alone ns/test | new matcher ns/test (path) | new / V8 | compile µs, V8 / new |',
    '|---|---|---|---|---|---|---|',
  ]
  for (const c of CASES) {
    const list = c.values ?? pool
    const compiled = compileValueRegex(c.pattern)
    if (typeof compiled === 'string') throw new Error(`BUG: ${c.pattern} ${compiled}`)
    const re2 = RE2JS.compile(c.pattern, RE2JS.DOTALL)
    const v8 = new RegExp(`^(?:${c.pattern})$`, 'su')
    for (const v of list) {
      if (compiled.test(v) !== re2.testExact(v) || (!c.skipV8 && v8.test(v) !== compiled.test(v))) {
        throw new Error(`BUG: ${c.pattern} answers differently on ${JSON.stringify(v)}`)
      }
    }
    // Alternated three times, best kept, so that a neighbour's load on the machine or a JIT
    // recompilation halfway does not favour whichever runs first.
    let oldNs = c.skipV8 ? undefined : Number.POSITIVE_INFINITY
    let re2Ns = Number.POSITIVE_INFINITY
    let newNs = Number.POSITIVE_INFINITY
    for (let round = 0; round < 3; round++) {
      if (oldNs !== undefined)
        oldNs = Math.min(
          oldNs,
          nsPerTest((v) => v8.test(v), list),
        )
      re2Ns = Math.min(
        re2Ns,
        nsPerTest((v) => re2.testExact(v), list),
      )
      newNs = Math.min(
        newNs,
        nsPerTest((v) => compiled.test(v), list),
      )
    }
    // A fresh RegExp compiles lazily, on first use; test once so that the compilation is timed.
    const oldCompile = usPerCompile(() => new RegExp(`^(?:${c.pattern})$`, 'su').test(''))
    const newCompile = usPerCompile(() => compileValueRegex(c.pattern))
    const label =
      c.values === undefined ? '1,000 tag values' : JSON.stringify(list[0]).replace(/a{20,}/, (a) => `a×${a.length}`)
    rows.push(
      `| \`${c.pattern}\` | ${label} | ${oldNs === undefined ? 'does not answer' : oldNs.toFixed(1)} | ${re2Ns.toFixed(1)} | ` +
        `${newNs.toFixed(1)} (${compiled.kind}) | ${oldNs === undefined ? '' : `${(newNs / oldNs).toFixed(2)}x`} | ` +
        `${c.skipV8 ? '' : oldCompile.toFixed(1)} / ${newCompile.toFixed(1)} |`,
    )
  }
  console.log(`Node ${process.version}\n\n${rows.join('\n')}\n`)
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) regexBench()
