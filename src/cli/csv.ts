/**
 * A streaming CSV reader and writer (RFC 4180: comma-separated, fields quoted with `"` when they
 * hold a comma, a quote or a line break, `""` for a quote inside). The reader takes text in chunks
 * of any size and hands out one record at a time with the line it started on, so an importer's
 * memory does not grow with the file and its error reports can name the line. A malformed record
 * comes out as a record with an error, and reading goes on after the line break that ends it.
 */

export interface CsvRecord {
  readonly fields: string[]
  /** 1-based line on which the record starts; for a malformed one, the line of the defect. */
  readonly line: number
  /** Why the record is malformed (its fields are then empty); the reader goes on at the next line. */
  readonly error?: string
}

const QUOTE = 34
const COMMA = 44
const LF = 10
const CR = 13

/** Feeds text in with push(), collects complete records; end() flushes the last one. */
export class CsvReader {
  private fields: string[] = []
  private field = ''
  private inQuotes = false
  /** A quote seen inside a quoted field: either the closing quote or the first of `""`. */
  private quotePending = false
  /** The field started with a quote, so text after its closing quote is an error. */
  private quotedField = false
  private afterCr = false
  private line = 1
  private recordLine = 1
  private recordStarted = false
  /** The defect of the record being passed over up to its line break, and its line. */
  private skipping: { readonly line: number; readonly reason: string } | undefined

  /** Parses a chunk; returns the records completed by it. */
  push(chunk: string): CsvRecord[] {
    const out: CsvRecord[] = []
    let i = 0
    const n = chunk.length
    while (i < n) {
      const c = chunk.charCodeAt(i)
      if (this.afterCr) {
        this.afterCr = false
        // \r\n is one line break; the \r already ended the record.
        if (c === LF) {
          i++
          continue
        }
      }
      if (this.skipping !== undefined) {
        while (i < n && chunk.charCodeAt(i) !== LF && chunk.charCodeAt(i) !== CR) i++
        if (i === n) break
        out.push({ fields: [], line: this.skipping.line, error: this.skipping.reason })
        this.skipping = undefined
        this.newRecord(chunk.charCodeAt(i))
        i++
        continue
      }
      if (this.inQuotes) {
        if (this.quotePending) {
          this.quotePending = false
          if (c === QUOTE) {
            this.field += '"'
            i++
            continue
          }
          this.inQuotes = false
          // Falls through to the unquoted handling of this character.
        } else if (c === QUOTE) {
          this.quotePending = true
          i++
          continue
        } else {
          // Copy a run of ordinary characters at once: per-character string appends are slow.
          let j = i
          while (j < n) {
            const d = chunk.charCodeAt(j)
            if (d === QUOTE) break
            if (d === LF) this.line++
            j++
          }
          this.field += chunk.slice(i, j)
          i = j
          continue
        }
      }
      if (c === COMMA) {
        this.endField()
        i++
      } else if (c === LF || c === CR) {
        this.endField()
        out.push({ fields: this.fields, line: this.recordLine })
        this.newRecord(c)
        i++
      } else if (c === QUOTE) {
        if (this.field !== '' || this.quotedField) {
          this.skip('a quote inside an unquoted field (quote the whole field)')
          continue
        }
        this.inQuotes = true
        this.quotedField = true
        this.recordStarted = true
        i++
      } else {
        if (this.quotedField) {
          this.skip('text after the closing quote of a field')
          continue
        }
        let j = i + 1
        while (j < n) {
          const d = chunk.charCodeAt(j)
          if (d === COMMA || d === LF || d === CR || d === QUOTE) break
          j++
        }
        this.field += chunk.slice(i, j)
        this.recordStarted = true
        i = j
      }
    }
    return out
  }

  /** Ends the input; returns the last record when the text did not end with a line break. */
  end(): CsvRecord[] {
    if (this.skipping !== undefined) {
      const { line, reason } = this.skipping
      this.skipping = undefined
      return [{ fields: [], line, error: reason }]
    }
    if (this.inQuotes && !this.quotePending) {
      this.inQuotes = false
      return [{ fields: [], line: this.recordLine, error: 'unterminated quoted field' }]
    }
    this.inQuotes = false
    this.quotePending = false
    if (!this.recordStarted && this.fields.length === 0) return []
    this.endField()
    const record = { fields: this.fields, line: this.recordLine }
    this.fields = []
    this.recordStarted = false
    return [record]
  }

  /** Passes over the rest of the record's line: a defect found on it. */
  private skip(reason: string): void {
    this.skipping = { line: this.line, reason }
    this.fields = []
    this.field = ''
    this.quotedField = false
  }

  /** After the line break `c` that ended a record. */
  private newRecord(c: number): void {
    this.fields = []
    this.recordStarted = false
    this.line++
    this.recordLine = this.line
    this.afterCr = c === CR
  }

  private endField(): void {
    this.fields.push(this.field)
    this.field = ''
    this.quotedField = false
    this.recordStarted = true
  }
}

const NEEDS_QUOTES = /[",\r\n]/

/** One CSV line (without its line break), quoting the fields that need it. */
export function csvLine(fields: readonly string[]): string {
  let out = ''
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!
    if (i > 0) out += ','
    out += NEEDS_QUOTES.test(f) ? `"${f.replaceAll('"', '""')}"` : f
  }
  return out
}
