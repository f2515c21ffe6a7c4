/**
 * A streaming CSV reader and writer (RFC 4180: comma-separated, fields quoted with `"` when they
 * hold a comma, a quote or a line break, `""` for a quote inside). The reader takes text in chunks
 * of any size and hands out one record at a time with the line it started on, so an importer's
 * memory does not grow with the file and its error reports can name the line.
 */

export class CsvSyntaxError extends Error {
  constructor(
    readonly line: number,
    readonly reason: string,
  ) {
    super(`line ${line}: ${reason}`)
    this.name = 'CsvSyntaxError'
  }
}

export interface CsvRecord {
  readonly fields: string[]
  /** 1-based line on which the record starts. */
  readonly line: number
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
        this.fields = []
        this.recordStarted = false
        this.line++
        this.recordLine = this.line
        this.afterCr = c === CR
        i++
      } else if (c === QUOTE) {
        if (this.field !== '' || this.quotedField) {
          throw new CsvSyntaxError(this.line, 'a quote inside an unquoted field (quote the whole field)')
        }
        this.inQuotes = true
        this.quotedField = true
        this.recordStarted = true
        i++
      } else {
        if (this.quotedField) throw new CsvSyntaxError(this.line, 'text after the closing quote of a field')
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
    if (this.inQuotes && !this.quotePending) throw new CsvSyntaxError(this.recordLine, 'unterminated quoted field')
    this.inQuotes = false
    this.quotePending = false
    if (!this.recordStarted && this.fields.length === 0) return []
    this.endField()
    const record = { fields: this.fields, line: this.recordLine }
    this.fields = []
    this.recordStarted = false
    return [record]
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
