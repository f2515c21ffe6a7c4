import { RE2JS, RE2JSException, RE2JSSyntaxException } from 're2js'

/**
 * Regex matchers in RE2 syntax, fully anchored, matched in time linear in the value (re2js, a pure
 * JavaScript port of RE2, as Prometheus uses Go's RE2). V8's RegExp backtracks, so `(a+)+$`
 * against 40 `a`s and a `!` never answers, and it compiles lazily with failures (out of memory on
 * deep nesting) that abort the process; neither may happen on a pattern a client sends.
 */

/** UTF-8 bytes of a pattern: four times the longest tag value, and ~300 host names in an alternation. */
export const MAX_REGEX_BYTES = 4096

/**
 * Instructions of a compiled pattern. Matching costs up to (instructions × value length) steps, and
 * compiling costs memory in proportion: `.{0,1000}` repeated fills 4 KiB to 800,000 instructions,
 * which takes 2 s and 500 MiB to compile. 2,000 allows `x{1000}` twice and keeps the worst case,
 * a thousand live threads over a 1 KiB value, near 0.1 s.
 */
export const MAX_REGEX_PROGRAM = 2000

/** The most strings a pattern may expand to and still be matched by a set lookup, as Prometheus. */
const MAX_SET_MATCHES = 256

/** How a compiled pattern tests a value; `kind` names the strategy, for tests and benchmarks. */
export interface ValueRegex {
  readonly kind: 'equal' | 'set' | 'prefix' | 'suffix' | 'contains' | 'any' | 're2'
  /**
   * Every value the pattern matches, when they are few and known (kinds `equal` and `set`): an
   * index can then read their posting lists instead of testing every series.
   */
  readonly values?: readonly string[]
  test(value: string): boolean
}

/**
 * Compiles a regex matcher's pattern, fully anchored: `h0[12]` matches `h01`, not `h012`. `.`
 * matches newlines too, as Prometheus's `(?s:...)`, so `.*` matches every value; it matches one
 * code point. Returns the reason the pattern is refused (too long, too large, does not compile),
 * or the compiled pattern.
 */
export function compileValueRegex(pattern: string): ValueRegex | string {
  const compiled = compileSized(pattern)
  return typeof compiled === 'string' ? compiled : compiled.regex
}

/** compileValueRegex, with the compiled program's instruction count (0 for a fast path). */
function compileSized(pattern: string): { regex: ValueRegex; program: number } | string {
  const bytes = Buffer.byteLength(pattern, 'utf8')
  if (bytes > MAX_REGEX_BYTES) return `is ${bytes} bytes long, more than the limit of ${MAX_REGEX_BYTES}`
  // Checked before compiling, because compiling is what costs: see MAX_REGEX_PROGRAM.
  const estimate = estimateProgramSize(pattern)
  if (estimate > MAX_REGEX_PROGRAM) return tooLarge(estimate)
  let re2: RE2JS
  try {
    // RE2 matches the whole value (testExact), so no anchors are wrapped around the pattern and
    // a value such as `a)|(b` cannot close a wrapping group and escape them: it does not parse.
    re2 = RE2JS.compile(pattern, RE2JS.DOTALL)
  } catch (err: unknown) {
    if (err instanceof RE2JSException) return `is not a valid regular expression: ${syntaxReason(err, pattern)}`
    // The parser bounds nesting at 1,000, but a smaller stack than Node's default must not crash us.
    if (err instanceof RangeError) return 'is not a valid regular expression: expression nests too deeply'
    throw err
  }
  const size = re2.programSize()
  if (size > MAX_REGEX_PROGRAM) return tooLarge(size)
  const fast = fastPath(pattern)
  return fast ? { regex: fast, program: 0 } : { regex: generalPath(re2), program: size }
}

/** A rough upper bound on the heap an RE2 instruction takes once compiled, for RegexCache. */
const BYTES_PER_INSTRUCTION = 128

/**
 * Compiled patterns by their text, least recently used first, bounded by an estimate of the memory
 * they hold. Compiling is most of what a regex matcher costs a query: a query with one selector
 * per metric compiles the same host alternation once per metric, and a dashboard sends the same
 * patterns on every refresh (VictoriaMetrics keeps such a cache too). Only patterns that compile
 * are kept, so refused ones cannot push good ones out.
 */
export class RegexCache {
  private readonly entries = new Map<string, { readonly regex: ValueRegex; readonly bytes: number }>()
  private bytes = 0

  constructor(private readonly maxBytes = 4 << 20) {}

  /** compileValueRegex(pattern), from the cache when it was compiled before. */
  compile(pattern: string): ValueRegex | string {
    const hit = this.entries.get(pattern)
    if (hit) {
      this.entries.delete(pattern)
      this.entries.set(pattern, hit)
      return hit.regex
    }
    const compiled = compileSized(pattern)
    if (typeof compiled === 'string') return compiled
    const bytes = 4 * pattern.length + 256 + BYTES_PER_INSTRUCTION * compiled.program
    if (bytes <= this.maxBytes) {
      this.entries.set(pattern, { regex: compiled.regex, bytes })
      this.bytes += bytes
      for (const [oldest, entry] of this.entries) {
        if (this.bytes <= this.maxBytes) break
        this.entries.delete(oldest)
        this.bytes -= entry.bytes
      }
    }
    return compiled.regex
  }

  /** How many patterns are kept, for tests. */
  get size(): number {
    return this.entries.size
  }
}

/**
 * RE2's full match, behind a check of the literal every match starts with (`web-` of
 * `web-[0-9]+`), which RE2 finds while compiling: most values of a tag fail it, and startsWith
 * costs a fraction of entering the matcher. The check is only a necessary condition, so it holds
 * for values with lone surrogates too, and RE2 still decides.
 */
function generalPath(re2: RE2JS): ValueRegex {
  const { prefix, prefixComplete } = re2.re2() as { prefix: unknown; prefixComplete: unknown }
  // A complete prefix is the whole pattern, such as `a{2}b` or `\Qa.b\E`: the match is equality.
  if (typeof prefix === 'string' && prefixComplete === true) {
    return { kind: 'equal', values: [prefix], test: (value) => value === prefix }
  }
  if (typeof prefix === 'string' && prefix !== '') {
    return { kind: 're2', test: (value) => value.startsWith(prefix) && re2.testExact(value) }
  }
  return { kind: 're2', test: (value) => re2.testExact(value) }
}

function tooLarge(size: number): string {
  return `is too large: it compiles to about ${size} instructions, more than the limit of ${MAX_REGEX_PROGRAM}`
}

/**
 * The parser's description and the part of the pattern it quotes. re2js compiles `(?s)` + the
 * pattern for DOTALL and may quote that prefix, which the user never wrote.
 */
function syntaxReason(err: RE2JSException, pattern: string): string {
  if (!(err instanceof RE2JSSyntaxException)) return err.message
  let input = err.getPattern()
  if (input === null || input === '') return err.getDescription()
  if (input.startsWith('(?s)') && !pattern.startsWith(input)) input = input.slice(4)
  return `${err.getDescription()}: \`${input}\``
}

// ---------------------------------------------------------------------------------------------
// Size estimate.

/** One open group while estimating. */
interface SizeFrame {
  /** The size of the branches before the current one, with one instruction per `|`. */
  done: number
  /** The size of the current branch so far. */
  branch: number
  /** The size of the current branch's last atom, which a repetition replaces. */
  last: number
  /** Whether the group captures, which costs two instructions; `(?:...)` costs none. */
  capture: boolean
}

/**
 * An upper bound on the instructions RE2 compiles a pattern to, computed from the text alone, as
 * RE2's parser sizes its tree: a literal, class, `.` or assertion is one instruction, as is an
 * empty branch; a capturing group adds two, `x*` two, `x+` and `x?` one, `x{n,m}` m copies plus
 * m−n, and `|` one. It reads just enough syntax to know what a repetition applies to; an invalid
 * pattern gets some estimate and is rejected by the parser afterwards.
 */
export function estimateProgramSize(pattern: string): number {
  const stack: SizeFrame[] = []
  let frame: SizeFrame = { done: 0, branch: 0, last: 0, capture: false }
  // Whether the previous token was a repetition, so that a `?` after it makes it lazy instead.
  let afterRepeat = false
  const atom = (size: number): void => {
    frame.branch += size
    frame.last = size
    afterRepeat = false
  }
  const repeat = (size: number): void => {
    frame.branch += size - frame.last
    frame.last = size
    afterRepeat = true
  }
  const groupSize = (f: SizeFrame): number => f.done + Math.max(1, f.branch) + (f.capture ? 2 : 0)
  let i = 0
  while (i < pattern.length) {
    const c = pattern[i] as string
    switch (c) {
      case '\\': {
        i = skipEscape(pattern, i)
        atom(1)
        // `\Q...\E` quotes literals; a repetition after it applies to the last one.
        if (pattern[i - 1] === 'Q' && pattern[i - 2] === '\\') {
          const end = pattern.indexOf('\\E', i)
          const stop = end === -1 ? pattern.length : end
          frame.branch += stop - i
          i = end === -1 ? pattern.length : end + 2
        }
        continue
      }
      case '[':
        i = skipClass(pattern, i)
        atom(1)
        continue
      case '(': {
        if (pattern[i + 1] === '?') {
          const close = pattern.indexOf(')', i)
          const colon = pattern.indexOf(':', i)
          if (close !== -1 && (colon === -1 || close < colon) && /^[imsU-]*$/.test(pattern.slice(i + 2, close))) {
            // Flags alone, such as `(?i)`: no group, no instruction.
            i = close + 1
            afterRepeat = false
            continue
          }
        }
        stack.push(frame)
        const capture = pattern[i + 1] !== '?' || pattern[i + 2] === 'P' || pattern[i + 2] === '<'
        frame = { done: 0, branch: 0, last: 0, capture }
        afterRepeat = false
        i = skipGroupOpening(pattern, i)
        continue
      }
      case ')': {
        const parent = stack.pop()
        if (parent !== undefined) {
          const size = groupSize(frame)
          frame = parent
          atom(size)
        }
        i++
        continue
      }
      case '|':
        frame.done += Math.max(1, frame.branch) + 1
        frame.branch = 0
        frame.last = 0
        afterRepeat = false
        i++
        continue
      case '*':
      case '+':
      case '?':
        if (c === '?' && afterRepeat) afterRepeat = false
        else repeat((c === '*' ? 2 : 1) + frame.last)
        i++
        continue
      case '{': {
        const counts = /^\{(\d+)(,(\d*))?\}/.exec(pattern.slice(i, i + 12))
        if (counts === null) break
        const min = Number(counts[1])
        const max = counts[2] === undefined ? min : counts[3] === '' ? -1 : Number(counts[3])
        // Counts over 1,000 are a syntax error; leave them to the parser to say so.
        if (min > 1000 || max > 1000) repeat(frame.last)
        else if (max === -1) repeat(min === 0 ? 2 + frame.last : 1 + min * frame.last)
        else repeat(Math.max(1, max * frame.last + (max - min)))
        i += counts[0].length
        continue
      }
    }
    // A literal, `.`, `^`, `$`, or a `{` that is not a repetition. A surrogate pair counts twice.
    atom(1)
    i++
  }
  while (stack.length > 0) {
    const size = groupSize(frame)
    frame = stack.pop() as SizeFrame
    atom(size)
  }
  // The match instruction, the failure instruction and the whole-match capture.
  return groupSize(frame) + 4
}

/** The index after the escape that starts at `i` (a backslash). */
function skipEscape(pattern: string, i: number): number {
  const c = pattern[i + 1]
  if ((c === 'x' || c === 'p' || c === 'P') && pattern[i + 2] === '{') {
    const end = pattern.indexOf('}', i)
    return end === -1 ? pattern.length : end + 1
  }
  if (c === 'x') return Math.min(pattern.length, i + 4)
  if (c === 'p' || c === 'P') return Math.min(pattern.length, i + 3)
  return Math.min(pattern.length, i + 2)
}

/** The index after the character class that starts at `i` (a `[`). */
function skipClass(pattern: string, i: number): number {
  let j = i + 1
  if (pattern[j] === '^') j++
  // A `]` first in a class is a literal.
  if (pattern[j] === ']') j++
  while (j < pattern.length && pattern[j] !== ']') {
    if (pattern[j] === '\\') j = skipEscape(pattern, j)
    else if (pattern[j] === '[' && pattern[j + 1] === ':') {
      const end = pattern.indexOf(':]', j + 2)
      j = end === -1 ? j + 1 : end + 2
    } else j++
  }
  return j + 1
}

/** The index after a group's opening: `(`, `(?:`, `(?i:`, `(?P<name>` or `(?<name>`. */
function skipGroupOpening(pattern: string, i: number): number {
  if (pattern[i + 1] !== '?') return i + 1
  const end = pattern[i + 2] === 'P' || pattern[i + 2] === '<' ? pattern.indexOf('>', i) : pattern.indexOf(':', i)
  return end === -1 ? i + 2 : end + 1
}

// ---------------------------------------------------------------------------------------------
// Fast paths.

/** A piece of a pattern the fast paths understand: a run of literals, a small finite set, or `.*`/`.+`. */
type Piece =
  | { readonly kind: 'literal'; readonly text: string }
  | { readonly kind: 'set'; readonly values: readonly string[] }
  | { readonly kind: 'any'; readonly nonEmpty: boolean }

/** Characters with a meaning outside a class; the fast paths take none of them as a literal. */
const META = new Set(['\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$'])

/** How deep groups may nest for the fast-path parser, which recurses; deeper patterns go to RE2. */
const MAX_FAST_DEPTH = 8

class Bail extends Error {}

/**
 * A matcher that answers exactly as RE2's full match would, without running it, for the common
 * shapes Prometheus's FastRegexMatcher also recognises: a literal (`abc`, string equality), a
 * finite set (`a|b|c`, `h0[12]`, `eu-(west|east)`: a set lookup), and one literal between `.*` or
 * `.+` (`eu-.*` startsWith, `.*x.*` includes, `.*-1` endsWith). It parses a strict subset of RE2
 * syntax and gives up (undefined) on anything else: escapes other than quoted punctuation, flags,
 * repetitions other than `.*` and `.+` at the ends, negated classes. The pattern has been compiled
 * by RE2 first, so it is valid. Literals holding a UTF-16 surrogate are left to RE2, so that a match
 * never starts or ends inside a surrogate pair, and `.` is one code point as in RE2.
 */
export function fastPath(pattern: string): ValueRegex | undefined {
  let branches: Piece[][]
  try {
    const parser = new FastParser(pattern)
    branches = parser.alternation(0)
    if (parser.i !== pattern.length) return undefined
  } catch (err: unknown) {
    // RE2 answers whatever the fast paths cannot, so running out of stack here only loses speed.
    if (err instanceof Bail || err instanceof RangeError) return undefined
    throw err
  }
  if (branches.every((b) => b.every((p) => p.kind !== 'any'))) {
    const values = expand(branches)
    if (values === undefined) return undefined
    if (values.length === 1) {
      const only = values[0] as string
      return { kind: 'equal', values, test: (value) => value === only }
    }
    const set = new Set(values)
    return { kind: 'set', values: [...set], test: (value) => set.has(value) }
  }
  if (branches.length !== 1) return undefined
  return dotStarPath(merge(branches[0] as Piece[]))
}

/** Joins adjacent literals and one-string sets into one literal. */
function merge(pieces: readonly Piece[]): Piece[] {
  const out: Piece[] = []
  for (const piece of pieces) {
    const text =
      piece.kind === 'literal'
        ? piece.text
        : piece.kind === 'set' && piece.values.length === 1
          ? piece.values[0]
          : undefined
    const prev = out[out.length - 1]
    if (text !== undefined && prev?.kind === 'literal')
      out[out.length - 1] = { kind: 'literal', text: prev.text + text }
    else if (text !== undefined) out.push({ kind: 'literal', text })
    else out.push(piece)
  }
  return out
}

/** `.*`, `.+`, and one literal after, before or between them. */
function dotStarPath(pieces: readonly Piece[]): ValueRegex | undefined {
  const [a, b, c] = pieces
  if (pieces.length === 1 && a?.kind === 'any') {
    return a.nonEmpty ? { kind: 'any', test: (value) => value.length > 0 } : { kind: 'any', test: () => true }
  }
  if (pieces.length === 2 && a?.kind === 'literal' && b?.kind === 'any') {
    const lit = a.text
    if (!b.nonEmpty) return { kind: 'prefix', test: (value) => value.startsWith(lit) }
    return { kind: 'prefix', test: (value) => value.length > lit.length && value.startsWith(lit) }
  }
  if (pieces.length === 2 && a?.kind === 'any' && b?.kind === 'literal') {
    const lit = b.text
    if (!a.nonEmpty) return { kind: 'suffix', test: (value) => value.endsWith(lit) }
    return { kind: 'suffix', test: (value) => value.length > lit.length && value.endsWith(lit) }
  }
  if (pieces.length === 3 && a?.kind === 'any' && b?.kind === 'literal' && c?.kind === 'any' && b.text !== '') {
    const lit = b.text
    // The first occurrence at or after `from` ends before every later one, so it alone decides
    // whether one leaves a code point after it.
    const from = a.nonEmpty ? 1 : 0
    if (!c.nonEmpty) return { kind: 'contains', test: (value) => value.indexOf(lit, from) !== -1 }
    return {
      kind: 'contains',
      test: (value) => {
        const at = value.indexOf(lit, from)
        return at !== -1 && at + lit.length < value.length
      },
    }
  }
  return undefined
}

/** Every string a sequence of alternatives of literals and sets matches, or undefined past the limit. */
function expand(branches: readonly (readonly Piece[])[]): string[] | undefined {
  const out: string[] = []
  for (const branch of branches) {
    let strings = ['']
    for (const piece of branch) {
      if (piece.kind === 'any') return undefined
      const options = piece.kind === 'literal' ? [piece.text] : piece.values
      if (strings.length * options.length > MAX_SET_MATCHES) return undefined
      strings = strings.flatMap((s) => options.map((o) => s + o))
    }
    out.push(...strings)
    if (out.length > MAX_SET_MATCHES) return undefined
  }
  return out
}

/** A recursive-descent parser for the subset of RE2 syntax the fast paths take; throws Bail on the rest. */
class FastParser {
  i = 0

  constructor(private readonly pattern: string) {}

  /** Branches separated by `|`, up to a `)` or the end. */
  alternation(depth: number): Piece[][] {
    const branches: Piece[][] = [this.concatenation(depth)]
    while (this.pattern[this.i] === '|') {
      this.i++
      branches.push(this.concatenation(depth))
    }
    return branches
  }

  private concatenation(depth: number): Piece[] {
    const pieces: Piece[] = []
    for (;;) {
      const c = this.pattern[this.i]
      if (c === undefined || c === '|' || c === ')') return pieces
      const piece = this.piece(c, depth)
      // A repetition of anything but `.` leaves the subset; so does a lazy or stacked one.
      const next = this.pattern[this.i]
      if (next === '*' || next === '+' || next === '?' || next === '{') throw new Bail()
      pieces.push(piece)
    }
  }

  private piece(c: string, depth: number): Piece {
    if (c === '.') {
      const op = this.pattern[this.i + 1]
      if (op !== '*' && op !== '+') throw new Bail()
      this.i += 2
      return { kind: 'any', nonEmpty: op === '+' }
    }
    if (c === '\\') {
      const quoted = this.pattern[this.i + 1]
      // Only quoted punctuation; `\d`, `\n`, `\x41`, `\Q` and the like are left to RE2.
      if (quoted === undefined || !(META.has(quoted) || quoted === '-')) throw new Bail()
      this.i += 2
      return { kind: 'literal', text: quoted }
    }
    if (c === '[') return { kind: 'set', values: this.charClass() }
    if (c === '(') {
      if (depth >= MAX_FAST_DEPTH) throw new Bail()
      this.i++
      if (this.pattern[this.i] === '?') {
        if (this.pattern[this.i + 1] !== ':') throw new Bail()
        this.i += 2
      }
      const inner = this.alternation(depth + 1)
      if (this.pattern[this.i] !== ')') throw new Bail()
      this.i++
      const values = expand(inner)
      if (values === undefined) throw new Bail()
      return { kind: 'set', values }
    }
    if (META.has(c) || isSurrogate(c)) throw new Bail()
    this.i++
    return { kind: 'literal', text: c }
  }

  /** A class of plain characters and ranges, such as `[12]` or `[a-c0-9]`, as the strings it matches. */
  private charClass(): string[] {
    const end = this.pattern.indexOf(']', this.i + 1)
    if (end === -1) throw new Bail()
    const body = this.pattern.slice(this.i + 1, end)
    // Negation, a leading `]`, escapes, nested `[:alpha:]` and a `-` at either end all mean more than their characters.
    if (body === '' || body.startsWith('^') || body.startsWith('-') || body.endsWith('-') || /[\\[]/.test(body)) {
      throw new Bail()
    }
    const values = new Set<string>()
    for (let k = 0; k < body.length; k++) {
      const lo = body.charCodeAt(k)
      let hi = lo
      if (body[k + 1] === '-') {
        hi = body.charCodeAt(k + 2)
        k += 2
      }
      if (isSurrogateCode(lo) || isSurrogateCode(hi) || hi < lo || hi - lo >= MAX_SET_MATCHES) throw new Bail()
      for (let code = lo; code <= hi; code++) values.add(String.fromCharCode(code))
      if (values.size > MAX_SET_MATCHES) throw new Bail()
    }
    this.i = end + 1
    return [...values]
  }
}

function isSurrogateCode(code: number): boolean {
  return code >= 0xd800 && code <= 0xdfff
}

function isSurrogate(c: string): boolean {
  return isSurrogateCode(c.charCodeAt(0))
}
