import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import { runComplianceSuite } from './compliance.js'

runComplianceSuite('basic engine', async ({ maxPointsPerQuery }) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'v3-compliance-'))
  const engine = new BasicEngine({ dataDir, maxPointsPerQuery, sync: 'off' })
  await engine.open()
  return {
    engine,
    cleanup: async () => {
      await engine.close()
      await rm(dataDir, { recursive: true, force: true })
    },
  }
})
