// The remote write encoder of `npm run bench -- --protocols`: its bodies must be what V3's own
// decoder reads back, or the bench would time V3 refusing or misreading them.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { encodeLabels, encodeRemoteWriteBody, encodeWriteRequest } from '../../bench/prom-remote-encode.js'
import { snappyDecode } from '../../src/server/prom-remote.js'
import { decodeWrite } from '../fixtures/prom-remote-bodies.js'

const MAX = 64 * 1024 * 1024

test('bench remote write bodies decode to the samples encoded, one series each, labels sorted by name', () => {
  const a = encodeLabels({ zone: 'b', hostname: 'host_1', __name__: 'cpu_usage_user', Arch: 'x64' })
  const b = encodeLabels({ __name__: 'cpu_usage_idle', hostname: 'host_2' })
  // Timestamps of 2026 need six varint bytes, past the 32 bits of JavaScript's shift operators.
  const t = Date.UTC(2026, 0, 1)
  const samples = [
    { labels: a, timestampMs: t, value: 57.734751270618 },
    { labels: b, timestampMs: t + 10_000, value: -0.5 },
    { labels: a, timestampMs: 0, value: 1e300 },
  ]
  const { series, samples: count } = decodeWrite(snappyDecode(encodeRemoteWriteBody(samples), MAX))
  assert.equal(count, 3)
  assert.deepEqual(
    series.map((s) => ({ metric: s.metric, tags: s.tags, ts: Array.from(s.timestamps), vs: Array.from(s.values) })),
    [
      {
        metric: 'cpu_usage_user',
        tags: [
          { key: 'Arch', value: 'x64' },
          { key: 'hostname', value: 'host_1' },
          { key: 'zone', value: 'b' },
        ],
        ts: [t],
        vs: [57.734751270618],
      },
      { metric: 'cpu_usage_idle', tags: [{ key: 'hostname', value: 'host_2' }], ts: [t + 10_000], vs: [-0.5] },
      {
        metric: 'cpu_usage_user',
        tags: [
          { key: 'Arch', value: 'x64' },
          { key: 'hostname', value: 'host_1' },
          { key: 'zone', value: 'b' },
        ],
        ts: [0],
        vs: [1e300],
      },
    ],
  )
})

test('the bench encoder refuses timestamps it cannot write as a plain varint', () => {
  const labels = encodeLabels({ __name__: 'm' })
  assert.throws(() => encodeWriteRequest([{ labels, timestampMs: -1, value: 0 }]), /non-negative integers/)
  assert.throws(() => encodeWriteRequest([{ labels, timestampMs: 1.5, value: 0 }]), /non-negative integers/)
})
