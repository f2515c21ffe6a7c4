/**
 * Numbers and times as Prometheus' JSON writes them: sample values as strings in Go's
 * strconv.FormatFloat(v, 'f', -1, 64) form, and timestamps as unix seconds with milliseconds.
 */

/** A value as Go's FormatFloat(v, 'f', -1, 64): the shortest digits that read back as v, never an exponent. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN'
  if (v === Number.POSITIVE_INFINITY) return '+Inf'
  if (v === Number.NEGATIVE_INFINITY) return '-Inf'
  if (Object.is(v, -0)) return '-0'
  const s = String(v)
  const e = s.indexOf('e')
  if (e < 0) return s
  // JavaScript switches to an exponent below 1e-6 and from 1e21 up; spell the same digits out.
  const negative = s.startsWith('-')
  const mantissa = s.slice(negative ? 1 : 0, e)
  const exponent = Number(s.slice(e + 1))
  const point = mantissa.indexOf('.')
  const digits = point < 0 ? mantissa : mantissa.slice(0, point) + mantissa.slice(point + 1)
  // The position of the decimal point relative to the start of the digits.
  const at = (point < 0 ? mantissa.length : point) + exponent
  let out: string
  if (at <= 0) out = `0.${'0'.repeat(-at)}${digits}`
  else if (at >= digits.length) out = digits + '0'.repeat(at - digits.length)
  else out = `${digits.slice(0, at)}.${digits.slice(at)}`
  return negative ? `-${out}` : out
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
