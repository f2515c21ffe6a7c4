/**
 * Progress on stderr: a bar redrawn in place on a terminal (bytes, rows/s, ETA), plain lines every
 * few seconds otherwise, so that logs of a piped or scheduled run stay readable.
 */

const LINE_INTERVAL_MS = 5000
const BAR_INTERVAL_MS = 200

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`
}

export class Progress {
  private bytes = 0
  private rows = 0
  private readonly started = performance.now()
  private lastDraw = this.started
  private drawn = false
  private readonly tty = process.stderr.isTTY === true
  /** Off a terminal, a line every interval from the start, whether or not the input moves. */
  private readonly timer: NodeJS.Timeout | undefined

  constructor(
    private readonly label: string,
    /** Total input bytes when known (a file), for the percentage and the ETA. */
    private readonly totalBytes: number | undefined,
    private readonly quiet: boolean,
  ) {
    if (!quiet && !this.tty) this.timer = setInterval(() => this.draw(), LINE_INTERVAL_MS).unref()
  }

  addBytes(n: number): void {
    this.bytes += n
    this.maybeDraw()
  }

  addRow(n = 1): void {
    const before = this.rows
    this.rows += n
    // Look at the clock once per 1,024 rows, whether rows come one by one or in batches.
    if (Math.floor(this.rows / 1024) !== Math.floor(before / 1024)) this.maybeDraw()
  }

  /** Erases the bar before another line is written to stderr. */
  clear(): void {
    if (this.drawn && this.tty) process.stderr.write('\r\u001b[2K')
    this.drawn = false
  }

  done(): void {
    clearInterval(this.timer)
    this.clear()
  }

  /** Redraws the bar on a terminal, at most every BAR_INTERVAL_MS. */
  private maybeDraw(): void {
    if (this.quiet || !this.tty) return
    const now = performance.now()
    if (now - this.lastDraw < BAR_INTERVAL_MS) return
    this.lastDraw = now
    this.draw()
  }

  private draw(): void {
    const seconds = (performance.now() - this.started) / 1000
    const rate = Math.round(this.rows / Math.max(seconds, 0.001))
    const total = this.totalBytes
    const fraction = total ? Math.min(1, this.bytes / total) : undefined
    const eta = fraction && fraction > 0 ? Math.round((seconds / fraction) * (1 - fraction)) : undefined
    const amount = total ? `${mib(this.bytes)}/${mib(total)}` : mib(this.bytes)
    const text = `${this.label}: ${amount}, ${this.rows} rows, ${rate} rows/s${eta === undefined ? '' : `, ETA ${eta}s`}`
    if (this.tty) {
      const width = 24
      const filled = fraction === undefined ? 0 : Math.round(fraction * width)
      const bar = fraction === undefined ? '' : `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] `
      process.stderr.write(`\r\u001b[2K${bar}${text}`)
      this.drawn = true
    } else {
      process.stderr.write(`${text}\n`)
    }
  }
}
