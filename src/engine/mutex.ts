/**
 * Serializes the engine's background jobs (sealing, moving, retention, deletes) so that two of
 * them never read-modify-write the same block at once. Writes and queries do not take it.
 */
export class Mutex {
  private tail: Promise<void> = Promise.resolve()

  async run<T>(job: () => Promise<T>): Promise<T> {
    const previous = this.tail
    let release: () => void = () => {}
    this.tail = new Promise<void>((resolve) => {
      release = resolve
    })
    await previous
    try {
      return await job()
    } finally {
      release()
    }
  }
}
