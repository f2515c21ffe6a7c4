// The TSBS devops "cpu-only" shape, generated deterministically: 100 hosts with 10 tags each, 10 cpu
import { prng } from '../src/model/prng.js'

export { prng }
// metrics per host, a point every 10 s for 24 h (8.64 M points), values a clamped random walk.
// Every series has its own seeded generator, so any series can be regenerated alone for the
// reference results that the queries are checked against.

export const HOSTS = 100
export const METRICS = [
  'cpu_usage_user',
  'cpu_usage_system',
  'cpu_usage_idle',
  'cpu_usage_nice',
  'cpu_usage_iowait',
  'cpu_usage_irq',
  'cpu_usage_softirq',
  'cpu_usage_steal',
  'cpu_usage_guest',
  'cpu_usage_guest_nice',
] as const
export const INTERVAL_MS = 10_000
export const START_MS = Date.UTC(2026, 0, 1)
export const POINTS_PER_SERIES = (24 * 3600 * 1000) / INTERVAL_MS

const REGIONS = [
  'us-east-1',
  'us-west-1',
  'us-west-2',
  'eu-west-1',
  'eu-central-1',
  'ap-southeast-1',
  'ap-northeast-1',
  'sa-east-1',
]

export interface HostTags {
  readonly [key: string]: string
}

export function hostTags(host: number): Record<string, string> {
  const r = prng(1000 + host)
  const region = REGIONS[host % REGIONS.length] as string
  return {
    hostname: `host_${host}`,
    region,
    datacenter: `${region}${'abc'[Math.floor(r() * 3)]}`,
    rack: String(Math.floor(r() * 100)),
    os: ['Ubuntu16.10', 'Ubuntu16.04LTS', 'Ubuntu15.10'][Math.floor(r() * 3)] as string,
    arch: ['x64', 'x86'][Math.floor(r() * 2)] as string,
    team: ['SF', 'NYC', 'LON', 'CHI'][Math.floor(r() * 4)] as string,
    service: String(Math.floor(r() * 20)),
    service_version: String(Math.floor(r() * 2)),
    service_environment: ['production', 'staging', 'test'][Math.floor(r() * 3)] as string,
  }
}

/**
 * The values of one series: a random walk with steps in [-5, 5), clamped to [0, 100]; with
 * `decimals` the values are rounded to that many decimals, as real CPU metrics are.
 */
export function seriesValues(host: number, metric: number, decimals?: number): Float64Array {
  const r = prng(host * 16 + metric + 1)
  const out = new Float64Array(POINTS_PER_SERIES)
  let v = r() * 100
  const scale = decimals === undefined ? 0 : 10 ** decimals
  for (let i = 0; i < POINTS_PER_SERIES; i++) {
    v = Math.min(100, Math.max(0, v + (r() - 0.5) * 10))
    out[i] = scale ? Math.round(v * scale) / scale : v
  }
  return out
}

export function timestampAt(i: number): number {
  return START_MS + i * INTERVAL_MS
}
