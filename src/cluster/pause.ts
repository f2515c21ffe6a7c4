/**
 * Waiting between retries, shared by membership, the leader election and the leader's work: a
 * sleep that an abort ends early, and exponential backoff with jitter.
 */

/** Exponential backoff with jitter: attempt 1 waits about `min`, doubling up to `max`. */
export function backoff(attempt: number, min: number, max: number): number {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt - 1, 30))
  return ceiling / 2 + Math.random() * (ceiling / 2)
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const done = () => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}

/** The message of an error, or the thrown value as text. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
