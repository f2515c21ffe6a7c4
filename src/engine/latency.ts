import type { LatencySummary } from './storage-engine.js'

/** Keeps the last `capacity` latencies; enough for stable p50 and p99 without unbounded memory. */
export class LatencyRecorder {
  private readonly samples: Float64Array
  private next = 0
  private total = 0

  constructor(capacity = 4096) {
    this.samples = new Float64Array(capacity)
  }

  record(ms: number): void {
    this.samples[this.next] = ms
    this.next = (this.next + 1) % this.samples.length
    this.total++
  }

  summary(): LatencySummary {
    const n = Math.min(this.total, this.samples.length)
    if (n === 0) return { count: 0, p50Ms: 0, p99Ms: 0 }
    const sorted = this.samples.slice(0, n).sort()
    const at = (q: number): number => sorted[Math.min(n - 1, Math.floor(q * n))] as number
    return { count: this.total, p50Ms: at(0.5), p99Ms: at(0.99) }
  }
}
