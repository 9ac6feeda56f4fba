// pg-boss at its fastest settings for this workload: insert() in bulk, work() in batches of
// `concurrency` (see below), on DATABASE_URL in a schema of its own.
import { PgBoss } from 'pg-boss'
import { settings, counter, chunks, report, deadline } from './common.mjs'

deadline()
const schema = `peerbench_${process.pid}`
const boss = new PgBoss({ connectionString: process.env.DATABASE_URL, schema, max: 40 })
boss.on('error', (e) => console.error(e))
await boss.start()
const name = 'noop'
await boss.createQueue(name)
const batches = chunks(settings.jobs, settings.chunk, (i) => ({ data: { i } }))
const done = counter(settings.jobs)
// Its fastest documented way to run `concurrency` jobs at once: one worker fetching batches of
// that size, fetching again at once while batches come back full (`burstWhenBatchFull`), and
// polling every 0.5 s otherwise. (`localConcurrency: 32` with one job per fetch waits a
// polling interval between fetches: about 64 jobs/s here.)
const options = {
  localConcurrency: 1,
  batchSize: settings.concurrency,
  burstWhenBatchFull: true,
  pollingIntervalSeconds: 0.5,
}
const startWorker = () => boss.work(name, options, async (jobs) => {
  for (const _ of jobs) done.tick()
})

let started
if (settings.mode === 'backlog') {
  for (const b of batches) await boss.insert(name, b)
  started = performance.now()
  await startWorker()
} else {
  await startWorker()
  started = performance.now()
  for (const b of batches) await boss.insert(name, b)
}
await done.all
const seconds = (performance.now() - started) / 1000
report('pg-boss', seconds)
await boss.stop({ graceful: false, wait: true })
const { default: pg } = await import('pg')
const client = new pg.Client({ connectionString: process.env.DATABASE_URL })
await client.connect()
await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
await client.end()
