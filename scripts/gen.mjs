// Regenerates gen/ from proto/ with buf and ts-proto, after linting the contract, and the Python
// client code in clients/python/gen with Debian's python3-grpc-tools.
// Usage: node scripts/gen.mjs [tsOutDir [pyOutDir]]
//   No argument: both into their committed folders. With arguments (the staleness test passes temp
//   dirs): only what is named, so a scratch run never touches the committed code.
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const buf = join(root, 'node_modules', '.bin', 'buf')
// Debian's interpreter, which python3-grpc-tools belongs to; the python3 first on PATH may be
// another one (pyenv, a venv) without grpc_tools.
const python = '/usr/bin/python3'
const pythonGenerator = join(root, 'clients', 'python', 'generate.py')

function run(args) {
  // cwd is the package root because buf.yaml, buf.gen.yaml and the plugin path are relative to it.
  const result = spawnSync(buf, args, { cwd: root, stdio: 'inherit' })
  if (result.error) throw result.error
  if (result.status !== 0) throw new Error(`buf ${args[0]} failed with exit status ${result.status}`)
}

/** True when Debian's python3 with grpc_tools is installed. */
export function hasPythonTools() {
  if (!existsSync(python)) return false
  return spawnSync(python, ['-c', 'import grpc_tools.protoc'], { stdio: 'ignore' }).status === 0
}

function generateTypeScript(outArg) {
  if (outArg === undefined || resolve(outArg) === join(root, 'gen')) {
    run(['generate'])
    return
  }
  // buf writes under <base>/gen (the template's out); generating into a scratch base and copying
  // gives the caller exactly the directory it asked for, with nothing from an earlier run.
  const out = resolve(outArg)
  const base = mkdtempSync(join(tmpdir(), 'v3-gen-'))
  try {
    run(['generate', '--output', base])
    rmSync(out, { recursive: true, force: true })
    cpSync(join(base, 'gen'), out, { recursive: true })
  } finally {
    rmSync(base, { recursive: true, force: true })
  }
}

function generatePython(outDir) {
  const result = spawnSync(python, [pythonGenerator, outDir], { cwd: root, stdio: 'inherit' })
  if (result.error) throw result.error
  if (result.status !== 0) throw new Error(`${pythonGenerator} failed with exit status ${result.status}`)
}

// Only when run as a script; the staleness test imports hasPythonTools.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [tsOut, pyOut] = process.argv.slice(2)
  run(['lint'])
  generateTypeScript(tsOut)
  const pythonTarget = tsOut === undefined ? join(root, 'clients', 'python', 'gen') : pyOut
  if (pythonTarget !== undefined) {
    if (hasPythonTools()) generatePython(resolve(pythonTarget))
    else if (tsOut === undefined) {
      // TypeScript work should not need Python; the staleness test in CI (where .ci/run installs
      // the packages) catches a contract change whose Python code was not regenerated.
      console.warn(
        'gen: skipped clients/python/gen: install python3-grpcio and python3-grpc-tools (apt-get) to regenerate it',
      )
    } else throw new Error(`cannot generate Python code into ${pythonTarget}: ${python} has no grpc_tools`)
  }
}
