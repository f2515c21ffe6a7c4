import { type CompiledSelector, compileSelector } from '../model/matcher.js'
import type { Selector, SeriesPoints, Tag } from '../model/types.js'
import type { Logger } from './config.js'
import type { PointsListener, Subscription } from './storage-engine.js'

/** One series' points of a commit, as the write path hands them over. */
export interface CommittedSeries {
  /** The canonical series key: the same series in every commit, so verdicts can be cached by it. */
  readonly key: string
  readonly metric: string
  readonly tags: readonly Tag[]
  /** Milliseconds since the epoch, ascending. */
  readonly timestamps: Float64Array
  readonly values: Float64Array
}

class Subscriber {
  /**
   * The selector's verdict per series key. Matching a regex per series and commit would cost more
   * than the commit itself under many subscribers; the set of series is bounded, so is this map.
   */
  private readonly verdicts = new Map<string, boolean>()

  constructor(
    private readonly selector: CompiledSelector,
    readonly listener: PointsListener,
  ) {}

  matches(s: CommittedSeries): boolean {
    // Series of another metric are turned away without a verdict kept for them.
    const only = this.selector.onlyMetric
    if (only !== undefined && s.metric !== only) return false
    let verdict = this.verdicts.get(s.key)
    if (verdict === undefined) {
      verdict = this.selector.matchesSeries(s.metric, s.tags)
      this.verdicts.set(s.key, verdict)
    }
    return verdict
  }
}

/**
 * Fans committed points out to live subscribers. It runs inside the write path, after the commit is
 * durable and before the writers are answered, so a subscriber sees a point no later than its
 * writer learns it is stored. Listeners only queue what they get; a slow consumer is the listener's
 * business (it drops the subscription), never the writer's.
 */
export class SubscriptionHub {
  private readonly subscribers = new Set<Subscriber>()

  constructor(private readonly logger: Logger) {}

  get size(): number {
    return this.subscribers.size
  }

  /** Throws ValidationError for a bad selector. */
  subscribe(selector: Selector, listener: PointsListener): Subscription {
    const subscriber = new Subscriber(compileSelector(selector, { requireMetric: true }), listener)
    this.subscribers.add(subscriber)
    return {
      close: () => {
        this.subscribers.delete(subscriber)
      },
    }
  }

  publish(series: readonly CommittedSeries[]): void {
    for (const subscriber of this.subscribers) {
      const matched: SeriesPoints[] = []
      for (const s of series) {
        if (s.timestamps.length > 0 && subscriber.matches(s)) {
          matched.push({ metric: s.metric, tags: s.tags, timestamps: s.timestamps, values: s.values })
        }
      }
      if (matched.length === 0) continue
      try {
        subscriber.listener(matched)
      } catch (err) {
        // The points are durable and the writers must hear so; a faulty listener loses only itself.
        this.subscribers.delete(subscriber)
        this.logger.error({ err }, 'a subscription listener threw; the subscription is dropped')
      }
    }
  }
}
