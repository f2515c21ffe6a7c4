/**
 * The plugin manager of the architecture document: plugins are registered by name, declare the
 * plugins they need, start in dependency order and stop in reverse. It lives in the engine layer
 * because engines are what it manages and it needs nothing above the StorageEngine interface: the
 * cluster engine (a layer up) can register itself here as well. Reading configuration and
 * importing plugin modules from paths is the CLI's business (src/cli/plugins.ts).
 */
import type { BasicEngineOptions, Logger } from './config.js'
import type { StorageEngine } from './storage-engine.js'

export class PluginError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'PluginError'
  }
}

export interface PluginContext {
  /** The engine options of the configuration: data folder, tiers, limits. */
  readonly options: BasicEngineOptions
  readonly logger: Logger
  /** What a dependency's start() returned; only names listed in dependsOn may be asked for. */
  dependency(name: string): unknown
}

/** A unit with a lifecycle. start() returns the plugin's instance; stop() releases it. */
export interface Plugin<T = unknown> {
  readonly name: string
  /** `engine` plugins return an open StorageEngine from start(); `service` plugins anything. */
  readonly kind: 'engine' | 'service'
  /** Plugins that must be started before this one. */
  readonly dependsOn?: readonly string[]
  start(ctx: PluginContext): Promise<T>
  stop(instance: T): Promise<void>
}

export type EnginePlugin = Plugin<StorageEngine> & { readonly kind: 'engine' }

interface Started {
  readonly plugin: Plugin
  readonly instance: unknown
}

export class PluginManager {
  private readonly plugins = new Map<string, Plugin>()
  private started: Started[] = []

  /** Adds a plugin; a second plugin with the same name is refused. */
  register(plugin: Plugin): void {
    const existing = this.plugins.get(plugin.name)
    if (existing !== undefined && existing !== plugin) {
      throw new PluginError(`cannot register plugin ${JSON.stringify(plugin.name)}: the name is taken`)
    }
    this.plugins.set(plugin.name, plugin)
  }

  get(name: string): Plugin | undefined {
    return this.plugins.get(name)
  }

  names(): string[] {
    return [...this.plugins.keys()].sort()
  }

  /**
   * The plugins `roots` need, dependencies first (a depth-first topological order). Throws
   * PluginError naming a missing plugin and who needs it, or the plugins of a cycle in order.
   */
  order(roots: readonly string[]): Plugin[] {
    const out: Plugin[] = []
    const done = new Set<string>()
    const path: string[] = []
    const visit = (name: string, neededBy: string | undefined): void => {
      if (done.has(name)) return
      const cycleAt = path.indexOf(name)
      if (cycleAt >= 0) {
        throw new PluginError(`plugin dependency cycle: ${[...path.slice(cycleAt), name].join(' -> ')}`)
      }
      const plugin = this.plugins.get(name)
      if (plugin === undefined) {
        const who = neededBy === undefined ? 'is selected' : `is needed by plugin ${JSON.stringify(neededBy)}`
        throw new PluginError(
          `plugin ${JSON.stringify(name)} ${who} but is not registered (registered: ${this.names().join(', ') || 'none'})`,
        )
      }
      path.push(name)
      for (const dep of plugin.dependsOn ?? []) visit(dep, name)
      path.pop()
      done.add(name)
      out.push(plugin)
    }
    for (const root of roots) visit(root, undefined)
    return out
  }

  /**
   * Starts what `roots` need in dependency order and returns the instances by name. When one fails
   * to start, the ones already started are stopped (in reverse) before the error is rethrown.
   */
  async start(
    roots: readonly string[],
    base: Omit<PluginContext, 'dependency'>,
  ): Promise<ReadonlyMap<string, unknown>> {
    if (this.started.length > 0) throw new PluginError('BUG: plugins started twice')
    const instances = new Map<string, unknown>()
    for (const plugin of this.order(roots)) {
      const allowed = new Set(plugin.dependsOn ?? [])
      const ctx: PluginContext = {
        ...base,
        dependency: (name) => {
          if (!allowed.has(name)) {
            throw new PluginError(`plugin ${plugin.name} asked for ${name}, which is not in its dependsOn`)
          }
          return instances.get(name)
        },
      }
      let instance: unknown
      try {
        instance = await plugin.start(ctx)
      } catch (err) {
        await this.stop().catch(() => {})
        throw new PluginError(`cannot start plugin ${plugin.name}: ${(err as Error).message}`, { cause: err })
      }
      instances.set(plugin.name, instance)
      this.started.push({ plugin, instance })
    }
    return instances
  }

  /** Stops the started plugins in the reverse of their start order; the first failure is rethrown after all ran. */
  async stop(): Promise<void> {
    const started = this.started
    this.started = []
    let failure: unknown
    for (const { plugin, instance } of started.reverse()) {
      try {
        await plugin.stop(instance)
      } catch (err) {
        failure ??= new PluginError(`cannot stop plugin ${plugin.name}: ${(err as Error).message}`, { cause: err })
      }
    }
    if (failure !== undefined) throw failure
  }
}
