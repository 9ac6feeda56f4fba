// graphile-worker at its usual settings: addJobs in bulk, run() with `concurrency`, LISTEN/
// NOTIFY wake-ups (its default), on DATABASE_URL in a schema of its own.
import { run, makeWorkerUtils, Logger } from 'graphile-worker'
import { settings, counter, chunks, report, deadline } from './common.mjs'

deadline()
const schema = `peerbench_gw_${process.pid}`
const connectionString = process.env.DATABASE_URL
// Quiet: it logs every job at info level by default.
const logger = new Logger(() => () => {})
const utils = await makeWorkerUtils({ connectionString, schema, logger })
await utils.migrate()
const batches = chunks(settings.jobs, settings.chunk, (i) => ({ identifier: 'noop', payload: { i } }))
const done = counter(settings.jobs)
const startWorker = () => run({
  connectionString,
  schema,
  concurrency: settings.concurrency,
  noHandleSignals: true,
  taskList: { noop: async () => { done.tick() } },
  logger,
})

let runner
let started
if (settings.mode === 'backlog') {
  for (const b of batches) await utils.addJobs(b)
  started = performance.now()
  runner = await startWorker()
} else {
  runner = await startWorker()
  started = performance.now()
  for (const b of batches) await utils.addJobs(b)
}
await done.all
const seconds = (performance.now() - started) / 1000
report('graphile-worker', seconds)
await runner.stop()
await utils.withPgClient((c) => c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`))
await utils.release()
