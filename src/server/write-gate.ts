/**
 * How many HTTP write requests are read, decoded and written at once. A request beyond the limit
 * waits here, in arrival order, with its body still unread on its socket (TCP holds the sender
 * back), so that the memory the write endpoints take is bounded by the limit times the largest
 * body, however many clients send at once. A request that waits longer than the queue timeout, or
 * whose client goes away, leaves the queue without taking a slot.
 */
export class WriteGate {
  private running = 0
  private readonly waiting: Array<() => void> = []

  constructor(
    /** Requests served at once. */
    readonly maxConcurrent: number,
    /** How long a request may wait for a slot, in milliseconds. */
    readonly queueTimeoutMs: number,
    /** Told the requests holding a slot and those waiting whenever either changes (the gauges). */
    private readonly onChange: (inProgress: number, waiting: number) => void = () => {},
  ) {}

  /**
   * Takes a slot, waiting for one while all are taken. Resolves true once it holds one (release it
   * with leave()), false when the queue timeout passed or `signal` aborted first.
   */
  async enter(signal: AbortSignal): Promise<boolean> {
    if (this.running < this.maxConcurrent && this.waiting.length === 0) {
      this.running++
      this.changed()
      return true
    }
    if (signal.aborted) return false
    return new Promise<boolean>((resolve) => {
      const admit = (): void => {
        settle()
        this.running++
        this.changed()
        resolve(true)
      }
      const giveUp = (): void => {
        settle()
        const at = this.waiting.indexOf(admit)
        if (at >= 0) this.waiting.splice(at, 1)
        this.changed()
        resolve(false)
      }
      const timer = setTimeout(giveUp, this.queueTimeoutMs)
      const settle = (): void => {
        clearTimeout(timer)
        signal.removeEventListener('abort', giveUp)
      }
      signal.addEventListener('abort', giveUp, { once: true })
      this.waiting.push(admit)
      this.changed()
    })
  }

  /** Frees a slot taken by enter(), and hands it to the request that has waited longest. */
  leave(): void {
    this.running--
    const next = this.waiting.shift()
    if (next !== undefined) next()
    else this.changed()
  }

  private changed(): void {
    this.onChange(this.running, this.waiting.length)
  }
}
