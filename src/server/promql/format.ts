/**
 * Numbers and times as Prometheus' JSON writes them: sample values as strings in the form of its
 * marshalValue (Go's strconv 'f' format, and 'e' below 1e-6 and from 1e21 up, as JavaScript
 * writes numbers), and timestamps as unix seconds with milliseconds.
 */

/**
 * A value as Prometheus 2.42 writes it: the shortest digits that read back as v, spelled out
 * between 1e-6 and 1e21 and with an exponent of at least two digits outside (`1e+300`,
 * `3.9e-08`), as Go's AppendFloat(v, 'f' or 'e', -1, 64) writes them.
 */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN'
  if (v === Number.POSITIVE_INFINITY) return '+Inf'
  if (v === Number.NEGATIVE_INFINITY) return '-Inf'
  if (Object.is(v, -0)) return '-0'
  // JavaScript switches to an exponent at the same bounds; Go pads it to two digits.
  const s = String(v)
  const e = s.indexOf('e')
  if (e < 0) return s
  const digits = s.slice(e + 2)
  return `${s.slice(0, e + 2)}${digits.length < 2 ? `0${digits}` : digits}`
}

/** A millisecond timestamp as Prometheus writes it in JSON: seconds, and up to three decimals when not whole. */
export function formatTime(ms: number): string {
  const negative = ms < 0
  const abs = Math.abs(ms)
  const seconds = Math.trunc(abs / 1000)
  const fraction = abs - seconds * 1000
  const text = fraction === 0 ? String(seconds) : `${seconds}.${String(fraction).padStart(3, '0')}`
  return negative ? `-${text}` : text
}
