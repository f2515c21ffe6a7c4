import assert from 'node:assert/strict'
import { test } from 'node:test'
import { silentLogger } from '../../src/engine/config.js'
import { type Plugin, PluginError, PluginManager } from '../../src/engine/plugin-manager.js'

function recorder(events: string[], name: string, dependsOn: string[] = [], fail = false): Plugin<string> {
  return {
    name,
    kind: 'service',
    dependsOn,
    start: async (ctx) => {
      if (fail) throw new Error('boom')
      for (const d of dependsOn) assert.equal(ctx.dependency(d), `instance of ${d}`)
      events.push(`start ${name}`)
      return `instance of ${name}`
    },
    stop: async () => {
      events.push(`stop ${name}`)
    },
  }
}

const base = { options: { dataDir: 'x' }, logger: silentLogger }

test('starts dependencies first and stops in reverse order', async () => {
  const events: string[] = []
  const m = new PluginManager()
  m.register(recorder(events, 'engine', ['index', 'clock']))
  m.register(recorder(events, 'index', ['clock']))
  m.register(recorder(events, 'clock'))
  m.register(recorder(events, 'unused'))
  const instances = await m.start(['engine'], base)
  assert.equal(instances.get('engine'), 'instance of engine')
  await m.stop()
  assert.deepEqual(events, ['start clock', 'start index', 'start engine', 'stop engine', 'stop index', 'stop clock'])
})

test('refuses a cycle, naming its members in order', () => {
  const m = new PluginManager()
  m.register(recorder([], 'a', ['b']))
  m.register(recorder([], 'b', ['c']))
  m.register(recorder([], 'c', ['a']))
  assert.throws(
    () => m.order(['a']),
    (e: unknown) => e instanceof PluginError && e.message === 'plugin dependency cycle: a -> b -> c -> a',
  )
})

test('refuses a missing dependency, naming who needs it', () => {
  const m = new PluginManager()
  m.register(recorder([], 'engine', ['consul']))
  assert.throws(() => m.order(['engine']), /plugin "consul" is needed by plugin "engine" but is not registered/)
  assert.throws(() => m.register({ ...recorder([], 'engine'), start: async () => 'other' }), /name is taken/)
})

test('a failed start stops what already started, in reverse', async () => {
  const events: string[] = []
  const m = new PluginManager()
  m.register(recorder(events, 'a'))
  m.register(recorder(events, 'b', ['a']))
  m.register(recorder(events, 'c', ['b'], true))
  await assert.rejects(m.start(['c'], base), /cannot start plugin c: boom/)
  assert.deepEqual(events, ['start a', 'start b', 'stop b', 'stop a'])
})
