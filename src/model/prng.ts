/**
 * mulberry32: a small, fast generator whose whole state is one 32-bit seed, so a seeded run (a
 * property test, a fuzz run, a fault schedule, a benchmark data set) replays exactly. Not for
 * anything that must be unpredictable. Returns numbers in [0, 1).
 */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
