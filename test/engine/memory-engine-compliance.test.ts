// The custom engine of test/fixtures, loaded from its path as `v3 serve --engine <path>` loads it,
// started through the plugin manager (its clock dependency first), runs the same compliance suite
// as the basic engine.
import { join } from 'node:path'
import { engineOf, loadPlugins } from '../../src/cli/plugins.js'
import { silentLogger } from '../../src/engine/config.js'
import { runComplianceSuite } from './compliance.js'

const FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'memory-engine.ts')

runComplianceSuite('memory engine plugin', async ({ maxPointsPerQuery }) => {
  const { manager, engineName } = await loadPlugins(FIXTURE, [])
  const instances = await manager.start([engineName], {
    options: { dataDir: 'unused', maxPointsPerQuery },
    logger: silentLogger,
  })
  return { engine: engineOf(instances, engineName), cleanup: () => manager.stop() }
})
