// The workload every peer runs, the same as jobforge's side (see README.md): JOBS no-op jobs
// enqueued in bulk chunks of CHUNK, one worker process with CONCURRENCY at once.
//   MODE=backlog    enqueue everything, then start the worker and time the drain
//   MODE=streaming  start the worker, then enqueue chunk after chunk; time from the first
//                   enqueue to the last completion
// Prints one line of JSON: {"peer", "mode", "jobs", "concurrency", "seconds", "jobs_per_s"}.

export const settings = {
  mode: process.env.MODE ?? 'backlog',
  jobs: Number(process.env.JOBS ?? 20000),
  chunk: Number(process.env.CHUNK ?? 1000),
  concurrency: Number(process.env.CONCURRENCY ?? 32),
}

if (!['backlog', 'streaming'].includes(settings.mode)) {
  throw new Error(`MODE must be backlog or streaming, not ${settings.mode}`)
}

/** Resolves once `n` completions were counted by `tick()`. */
export function counter(n) {
  let done = 0
  let resolve
  const all = new Promise((r) => { resolve = r })
  return {
    tick() { done += 1; if (done === n) resolve() },
    get done() { return done },
    all,
  }
}

export function chunks(total, size, make) {
  const out = []
  for (let start = 0; start < total; start += size) {
    const batch = []
    for (let i = start; i < Math.min(total, start + size); i += 1) batch.push(make(i))
    out.push(batch)
  }
  return out
}

export function report(peer, seconds) {
  const line = {
    peer,
    mode: settings.mode,
    jobs: settings.jobs,
    concurrency: settings.concurrency,
    seconds: Number(seconds.toFixed(3)),
    jobs_per_s: Math.round(settings.jobs / seconds),
  }
  console.log(JSON.stringify(line))
}

/** Fails the run when it takes longer than `limit` seconds (a stuck peer). */
export function deadline(limit = 300) {
  const t = setTimeout(() => {
    console.error(`no result after ${limit} s`)
    process.exit(2)
  }, limit * 1000)
  t.unref()
}
