// BullMQ at its usual settings: Queue.addBulk, one Worker with `concurrency`, completed jobs
// kept (its default), on REDIS_URL.
import { Queue, Worker } from 'bullmq'
import { settings, counter, chunks, report, deadline } from './common.mjs'

deadline()
const url = new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
const connection = { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null }
const name = `peerbench-${process.pid}-${Date.now()}`
const queue = new Queue(name, { connection })
const batches = chunks(settings.jobs, settings.chunk, (i) => ({ name: 'noop', data: { i } }))
const done = counter(settings.jobs)
const startWorker = () => {
  const worker = new Worker(name, async () => null, { connection, concurrency: settings.concurrency })
  worker.on('completed', () => done.tick())
  return worker
}

let worker
let started
if (settings.mode === 'backlog') {
  for (const b of batches) await queue.addBulk(b)
  started = performance.now()
  worker = startWorker()
} else {
  worker = startWorker()
  await worker.waitUntilReady()
  started = performance.now()
  for (const b of batches) await queue.addBulk(b)
}
await done.all
const seconds = (performance.now() - started) / 1000
report('bullmq', seconds)
await worker.close()
await queue.obliterate({ force: true })
await queue.close()
