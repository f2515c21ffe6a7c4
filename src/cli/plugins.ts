/**
 * Which plugins `v3 serve` knows: the built-in engines by name, and modules named by path in the
 * configuration (`engine: ./my-engine.js`, `plugins: [./clock.js]`). A plugin module's default
 * export is a plugin or a list of plugins (see src/engine/plugin-manager.ts).
 */
import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { BasicEngine } from '../engine/basic-engine.js'
import { type EnginePlugin, type Plugin, PluginError, PluginManager } from '../engine/plugin-manager.js'
import type { StorageEngine } from '../engine/storage-engine.js'

export const basicEnginePlugin: EnginePlugin = {
  name: 'basic',
  kind: 'engine',
  async start(ctx) {
    const engine = new BasicEngine(ctx.options, { logger: ctx.logger })
    await engine.open()
    return engine
  },
  stop: (engine) => engine.close(),
}

function isPlugin(value: unknown): value is Plugin {
  if (typeof value !== 'object' || value === null) return false
  const p = value as Partial<Plugin>
  return (
    typeof p.name === 'string' &&
    (p.kind === 'engine' || p.kind === 'service') &&
    typeof p.start === 'function' &&
    typeof p.stop === 'function' &&
    (p.dependsOn === undefined || (Array.isArray(p.dependsOn) && p.dependsOn.every((d) => typeof d === 'string')))
  )
}

/** A name is a registered plugin; anything with a slash or a file extension is a module path. */
export function isModulePath(spec: string): boolean {
  return spec.includes('/') || spec.includes('\\') || /\.[cm]?[jt]s$/.test(spec)
}

/** Imports a plugin module and returns its plugins; relative paths resolve against the working folder. */
export async function loadPluginModule(path: string): Promise<Plugin[]> {
  const url = pathToFileURL(isAbsolute(path) ? path : resolve(path)).href
  let mod: { default?: unknown }
  try {
    mod = (await import(url)) as { default?: unknown }
  } catch (err) {
    throw new PluginError(`cannot load plugin module ${path}: ${(err as Error).message}`, { cause: err })
  }
  const exported = mod.default
  const list = Array.isArray(exported) ? exported : [exported]
  if (list.length === 0 || !list.every(isPlugin)) {
    throw new PluginError(
      `plugin module ${path} must export by default a plugin ({ name, kind, dependsOn?, start, stop }) or a list of them`,
    )
  }
  return list
}

export interface LoadedPlugins {
  readonly manager: PluginManager
  /** The name of the engine plugin that the configuration selects. */
  readonly engineName: string
}

/**
 * Registers the built-in engines and the plugins of `plugins` and of the engine module, and
 * resolves `engine` (a name or a module path) to the name of an engine plugin.
 */
export async function loadPlugins(engine: string, plugins: readonly string[]): Promise<LoadedPlugins> {
  const manager = new PluginManager()
  manager.register(basicEnginePlugin)
  for (const path of plugins) for (const p of await loadPluginModule(path)) manager.register(p)
  let engineName = engine
  if (isModulePath(engine)) {
    const loaded = await loadPluginModule(engine)
    for (const p of loaded) manager.register(p)
    const engines = loaded.filter((p) => p.kind === 'engine')
    if (engines.length !== 1) {
      throw new PluginError(`engine module ${engine} must export exactly one engine plugin, found ${engines.length}`)
    }
    engineName = engines[0]!.name
  }
  const selected = manager.get(engineName)
  if (selected === undefined) {
    throw new PluginError(`unknown engine ${JSON.stringify(engine)}; registered: ${manager.names().join(', ')}`)
  }
  if (selected.kind !== 'engine') throw new PluginError(`plugin ${engineName} is not an engine`)
  return { manager, engineName }
}

/** The started engine, checked to be one: a plugin's start() is foreign code. */
export function engineOf(instances: ReadonlyMap<string, unknown>, name: string): StorageEngine {
  const engine = instances.get(name) as Partial<StorageEngine> | undefined
  const methods = ['write', 'query', 'latest', 'listSeries', 'deleteSeries', 'compact', 'stats', 'close'] as const
  if (engine === undefined || methods.some((m) => typeof engine[m] !== 'function')) {
    throw new PluginError(`engine plugin ${name} did not return a StorageEngine from start()`)
  }
  return engine as StorageEngine
}
