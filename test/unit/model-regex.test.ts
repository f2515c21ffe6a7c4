import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { RE2JS } from 're2js'
import { prng } from '../../src/model/prng.js'
import { compileValueRegex, estimateProgramSize, fastPath, RegexCache, type ValueRegex } from '../../src/model/regex.js'

function pick<T>(rand: () => number, items: readonly T[]): T {
  return items[Math.floor(rand() * items.length)] as T
}

/**
 * A random pattern from a small grammar: mostly the shapes the fast paths take (literals, quoted
 * punctuation, small classes, groups, `.*` and `.+`), mixed with what must fall back to RE2
 * (repetitions, negated classes, `.` alone, escapes such as `\d`, flags), so both sides of every
 * fast path's boundary are drawn.
 */
function randomPattern(rand: () => number, depth = 0): string {
  if (depth === 0 && rand() < 0.25) {
    // The dot-star shapes: a literal after, before or between `.*` and `.+`, or beside a repetition.
    const ends = ['.*', '.+', '', '.', 'a*']
    let middle = ''
    for (let p = Math.floor(rand() * 3); p >= 0; p--)
      middle += pick(rand, ['a', 'b-', 'é', '😀', '\\.', '[a]', '(ab)', '(?:c)'])
    return `${pick(rand, ends)}${middle}${pick(rand, ends)}`
  }
  const branches = 1 + Math.floor(rand() * (depth === 0 ? 4 : 3))
  const out: string[] = []
  for (let b = 0; b < branches; b++) {
    let branch = ''
    const pieces = Math.floor(rand() * 5)
    for (let p = 0; p < pieces; p++) {
      const r = rand()
      if (r < 0.35) branch += pick(rand, ['a', 'b', 'c', '-', 'é', '😀', '\n', ' ', 'ab'])
      else if (r < 0.45) branch += pick(rand, ['\\.', '\\-', '\\*', '\\|', '\\\\'])
      else if (r < 0.6) branch += pick(rand, ['.*', '.+'])
      else if (r < 0.7) branch += pick(rand, ['[ab]', '[a-c]', '[b-]', '[.]', '[^a]', '[a-c-]', '[😀a]'])
      else if (r < 0.8 && depth < 3) {
        branch += `${pick(rand, ['(', '(?:'])}${randomPattern(rand, depth + 1)})`
      } else if (r < 0.9) branch += pick(rand, ['*', '+', '?', '{1,2}', '*?', '{0}'])
      else branch += pick(rand, ['.', '\\d', '(?i)a', '^', '$', '\\pL', '\\Qa.\\E'])
    }
    out.push(branch)
  }
  return out.join('|')
}

function randomValue(rand: () => number): string {
  let value = ''
  const length = Math.floor(rand() * 7)
  for (let i = 0; i < length; i++) {
    value += pick(rand, ['a', 'b', 'c', '-', '.', 'é', '😀', '\n', ' ', '*', '|', '\\', 'A', '1', '\ud800'])
  }
  return value
}

/** RE2's answer: the pattern compiled alone, as a Prometheus `(?s:...)` full match. */
function compileReference(pattern: string): RE2JS | undefined {
  try {
    return RE2JS.compile(pattern, RE2JS.DOTALL)
  } catch {
    return undefined
  }
}

describe('regex fast paths', () => {
  test('the common shapes take a fast path', () => {
    const kind = (pattern: string): string | undefined => fastPath(pattern)?.kind
    assert.equal(kind('web-1'), 'equal')
    assert.equal(kind('a|b|c'), 'set')
    assert.equal(kind('h0[12]'), 'set')
    assert.equal(kind('eu-(west|east)-[1-3]'), 'set')
    assert.equal(kind('eu-.*'), 'prefix')
    assert.equal(kind('.*-1'), 'suffix')
    assert.equal(kind('.*x.*'), 'contains')
    assert.equal(kind('.+'), 'any')
    assert.equal(kind('h0[12]+'), undefined)
    assert.equal(kind('[a-z][a-z]'), undefined, 'a set of more than 256 strings')
    assert.equal(kind('(?i)a'), undefined)
    assert.equal(kind('a\\d'), undefined)
  })

  test('differential: every compiled matcher answers as RE2 over random patterns and values', () => {
    const rand = prng(14)
    const kinds = new Map<string, number>()
    let patterns = 0
    for (let n = 0; n < 2000; n++) {
      const pattern = randomPattern(rand)
      const reference = compileReference(pattern)
      const compiled: ValueRegex | string = compileValueRegex(pattern)
      if (reference === undefined) {
        assert.equal(typeof compiled, 'string', `${JSON.stringify(pattern)} does not compile in RE2`)
        continue
      }
      assert.notEqual(typeof compiled, 'string', `${JSON.stringify(pattern)}: ${String(compiled)}`)
      const matcher = compiled as ValueRegex
      kinds.set(matcher.kind, (kinds.get(matcher.kind) ?? 0) + 1)
      patterns++
      for (let v = 0; v < 30; v++) {
        const value = randomValue(rand)
        assert.equal(
          matcher.test(value),
          reference.matches(value),
          `${matcher.kind} path of ${JSON.stringify(pattern)} on ${JSON.stringify(value)}`,
        )
      }
    }
    // Every path was exercised often enough for the comparison to mean something.
    assert.ok(patterns > 1200, `${patterns} valid patterns: ${JSON.stringify([...kinds])}`)
    for (const kind of ['equal', 'set', 'prefix', 'suffix', 'contains', 'any', 're2']) {
      assert.ok((kinds.get(kind) ?? 0) >= 5, `${kind}: ${JSON.stringify([...kinds])}`)
    }
  })

  test('differential: values built around the literal of a dot-star pattern', () => {
    // Random values rarely contain a multi-character literal; these always do, at every position.
    const rand = prng(7)
    for (const lit of ['ab', 'a-b', 'é😀']) {
      for (const pattern of [`.*${lit}.*`, `.+${lit}.*`, `.*${lit}.+`, `.+${lit}.+`, `${lit}.+`, `.+${lit}`]) {
        const matcher = compileValueRegex(pattern) as ValueRegex
        const reference = RE2JS.compile(pattern, RE2JS.DOTALL)
        for (let v = 0; v < 300; v++) {
          const value = randomValue(rand).slice(0, 3) + (rand() < 0.8 ? lit : '') + randomValue(rand).slice(0, 3)
          assert.equal(matcher.test(value), reference.matches(value), `${pattern} on ${JSON.stringify(value)}`)
        }
      }
    }
  })
})

describe('regex size estimate', () => {
  /** A random pattern with repetitions, groups and classes, for the size bound. */
  function sizedPattern(rand: () => number, depth = 0): string {
    let out = ''
    const pieces = 1 + Math.floor(rand() * 4)
    for (let p = 0; p < pieces; p++) {
      const r = rand()
      if (r < 0.3) out += pick(rand, ['a', 'bc', '.', '\\d', '\\pL', '[a-z]', '[^\\]]', '\\x{41}', '\\Qab\\E', '^'])
      else if (r < 0.5 && depth < 3) {
        out += `${pick(rand, ['(', '(?:', '(?i:', '(?P<n>'])}${sizedPattern(rand, depth + 1)})`
      } else if (r < 0.6) out += '|'
      else if (r < 0.7) out += '(?i)x'
      else {
        out += pick(rand, ['x', 'y'])
        out += pick(rand, ['*', '+', '?', '{3}', '{2,5}', '{4,}', '{0,7}', '{0}', '*?', '{2,3}?', '{,2}'])
      }
    }
    return out
  }

  test('the estimate is never below the size RE2 compiles to', () => {
    const rand = prng(3)
    let checked = 0
    for (let n = 0; n < 3000; n++) {
      const pattern = sizedPattern(rand)
      const reference = compileReference(pattern)
      if (reference === undefined) continue
      checked++
      const estimate = estimateProgramSize(pattern)
      assert.ok(estimate >= reference.programSize(), `${pattern}: ${estimate} < ${reference.programSize()}`)
    }
    assert.ok(checked > 1500, `${checked} valid patterns`)
  })

  test('the estimate is close for nested repetitions', () => {
    for (const pattern of ['a{1000}', '(?:a{10}){10}', '(a{2,5}b?){4,}', '.{0,1000}'.repeat(3)]) {
      const actual = RE2JS.compile(pattern, RE2JS.DOTALL).programSize()
      const estimate = estimateProgramSize(pattern)
      assert.ok(estimate >= actual && estimate <= actual * 1.2 + 10, `${pattern}: ${estimate} vs ${actual}`)
    }
  })
})

describe('compiled patterns', () => {
  test('equal and set patterns list the values they match, and nothing else', () => {
    assert.deepEqual(compileRegex('web-1').values, ['web-1'])
    assert.deepEqual([...(compileRegex('h0[12]|x').values ?? [])].sort(), ['h01', 'h02', 'x'])
    assert.deepEqual([...(compileRegex('a|a|b').values ?? [])].sort(), ['a', 'b'])
    assert.deepEqual(compileRegex('a{2}b').values, ['aab'], 'a complete literal prefix found by RE2')
    for (const pattern of ['eu-.*', '.*x.*', '.+', 'h0[12]+', '(?i)a']) {
      assert.equal(compileRegex(pattern).values, undefined, pattern)
    }
  })

  test('a cache compiles a pattern once, refuses what compileValueRegex refuses, and stays in its bound', () => {
    const cache = new RegexCache(4096)
    const first = cache.compile('host_1|host_2')
    assert.equal(cache.compile('host_1|host_2'), first, 'the same compiled matcher again')
    assert.equal(cache.compile('('), compileValueRegex('('))
    assert.equal(cache.size, 1, 'a refused pattern is not kept')
    // Each entry weighs at least 256 bytes: a 4 KiB bound keeps fewer than 16, the latest ones.
    for (let i = 0; i < 40; i++) cache.compile(`h${i}|g${i}`)
    assert.ok(cache.size < 16, `${cache.size} patterns kept`)
    const latest = cache.compile('h39|g39')
    assert.equal(cache.compile('h39|g39'), latest)
    assert.notEqual(cache.compile('host_1|host_2'), first, 'the oldest pattern was dropped')
    // A pattern larger than the whole bound is compiled and answered, not kept.
    const before = cache.size
    const big = cache.compile(`(?:${'[a-z]x'.repeat(200)})`)
    assert.equal(typeof big, 'object')
    assert.equal(cache.size, before)
  })
})

function compileRegex(pattern: string): ValueRegex {
  const compiled = compileValueRegex(pattern)
  if (typeof compiled === 'string') throw new Error(`${pattern}: ${compiled}`)
  return compiled
}
