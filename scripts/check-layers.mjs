// The layering check: imports flow one way, model <- codec <- engine <- cluster <- server <- cli
// (STYLE.md). Each layer lists the local folders and packages it may import; madge (run beside this
// in `npm test`) rejects cycles.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'

const root = resolve(import.meta.dirname, '..')
const rules = {
  // RE2 semantics for regex matchers: linear-time matching, as Prometheus has.
  model: { local: ['src/model'], packages: ['re2js'] },
  codec: { local: ['src/model', 'src/codec'], packages: [] },
  engine: { local: ['src/model', 'src/codec', 'src/engine'], packages: ['@nxtedition/rocksdb'] },
  // The cluster speaks to its peers in the internal contract (gen/v3storage/internal), never the public one.
  cluster: {
    local: ['src/model', 'src/codec', 'src/engine', 'src/cluster', 'gen/v3storage/internal'],
    packages: ['zeromq', 'consul', '@bufbuild/protobuf/wire'],
  },
  // The wire format of the messages that carry points, shared by the server and the client.
  wire: { local: ['src/model', 'src/wire'], packages: [] },
  // The server knows engines only through the StorageEngine interface file.
  server: {
    local: ['src/model', 'src/engine/storage-engine.ts', 'src/wire', 'src/server', 'gen'],
    packages: [
      '@grpc/',
      'grpc-health-check',
      '@bufbuild/protobuf',
      '@bufbuild/protobuf/wire',
      '@bufbuild/protobuf/wkt',
      'prom-client',
      // The Prometheus and InfluxDB endpoints: snappy frames and the official PromQL grammar.
      'snappy',
      '@prometheus-io/lezer-promql',
      '@lezer/common',
    ],
  },
  client: {
    local: ['src/model', 'src/wire', 'src/client', 'gen'],
    packages: ['@grpc/', '@bufbuild/protobuf', '@bufbuild/protobuf/wire'],
  },
  cli: { local: ['src', 'gen'], packages: ['*'] },
}

function files(dir) {
  const out = []
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) out.push(...files(path))
    else if (name.endsWith('.ts')) out.push(path)
  }
  return out
}

const importRe = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g
const problems = []
for (const layer of Object.keys(rules)) {
  const dir = join(root, 'src', layer)
  let list = []
  try {
    list = files(dir)
  } catch {
    continue
  }
  const rule = rules[layer]
  for (const file of list) {
    const text = readFileSync(file, 'utf8')
    for (const m of text.matchAll(importRe)) {
      const spec = m[1] ?? m[2]
      if (spec.startsWith('node:')) continue
      if (spec.startsWith('.')) {
        const target = relative(root, resolve(dirname(file), spec)).replace(/\.js$/, '.ts')
        if (!rule.local.some((allowed) => target === allowed || target.startsWith(`${allowed}/`))) {
          problems.push(`${relative(root, file)}: layer ${layer} may not import ${target}`)
        }
      } else if (
        !rule.packages.includes('*') &&
        !rule.packages.some((p) => spec === p || (p.endsWith('/') && spec.startsWith(p)))
      ) {
        problems.push(`${relative(root, file)}: layer ${layer} may not import package ${spec}`)
      }
    }
  }
}
if (problems.length > 0) {
  console.error(problems.join('\n'))
  process.exit(1)
}
console.log('layers: ok')
