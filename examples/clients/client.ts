// jobforge over HTTP from TypeScript with Node's built-in fetch (Node 20+, no packages):
// submit jobs, poll them to completion, read the stats.
//
// Needs a server with the demo kinds (`jobforge-server --demo-handlers`).
// Run: JOBFORGE_URL=http://127.0.0.1:8080 node --experimental-strip-types examples/clients/client.ts
// (with JOBFORGE_API_KEY=jfk_... when the server requires authentication)
// (Node 22.6+), or compile with `tsc` and run the JavaScript.

type JobState = "pending" | "queued" | "running" | "succeeded" | "dead" | "cancelled";

interface Job {
  id: string;
  kind: string;
  state: JobState;
  attempt: number;
  result: unknown;
  last_error: string | null;
}

interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  field?: string;
}

interface Schedule {
  id: string;
  cron?: string;
  every_ms?: number;
  paused: boolean;
  next_run_at: string | null;
  version: number;
  fired: number;
  skipped: number;
}

interface Upserted {
  outcome: "created" | "updated" | "unchanged";
  schedule: Schedule;
}

interface Triggered {
  job_id: string;
  location: string;
}

interface WorkflowStep {
  id: string;
  name: string;
  kind: string;
  state: JobState;
  after: string[];
  waiting_on: number;
}

interface Workflow {
  id: string;
  name: string;
  finished: boolean;
  counts: Record<JobState, number>;
  steps: WorkflowStep[];
}

interface StepDefinition {
  name: string;
  after?: string[];
  on_dependency_failure?: "cancel" | "skip" | "run";
  job: { kind: string; payload?: unknown };
}

interface Stats {
  ready: number;
  delayed: number;
  in_flight: number;
  dead: number;
  jobs: Record<JobState, number>;
}

class ProblemError extends Error {
  constructor(public readonly problem: Problem) {
    super(`${problem.status} ${problem.type}: ${problem.detail}`);
  }
}

class JobforgeClient {
  constructor(
    private readonly baseUrl: string,
    private readonly apiKey?: string,
  ) {}

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await fetch(this.baseUrl + path, {
      method,
      headers: {
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) {
      return undefined as T;
    }
    const payload = await response.json();
    if (!response.ok) {
      throw new ProblemError(payload as Problem);
    }
    return payload as T;
  }

  submit(kind: string, payload?: unknown, options: Record<string, unknown> = {}): Promise<Job> {
    return this.request<Job>("POST", "/v1/jobs", { kind, payload, ...options });
  }

  get(id: string): Promise<Job> {
    return this.request<Job>("GET", `/v1/jobs/${id}`);
  }

  async wait(id: string, timeoutMs = 20_000): Promise<Job> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const job = await this.get(id);
      if (job.state === "succeeded" || job.state === "dead" || job.state === "cancelled") {
        return job;
      }
      if (Date.now() > deadline) {
        throw new Error(`job ${id} still ${job.state} after ${timeoutMs} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  stats(): Promise<Stats> {
    return this.request<Stats>("GET", "/v1/queues/stats");
  }

  /** Declare a schedule; the same definition again changes nothing. */
  putSchedule(id: string, definition: Record<string, unknown>): Promise<Upserted> {
    return this.request<Upserted>("PUT", `/v1/schedules/${encodeURIComponent(id)}`, definition);
  }

  /** Submit the schedule's job now. */
  triggerSchedule(id: string): Promise<Triggered> {
    return this.request<Triggered>("POST", `/v1/schedules/${encodeURIComponent(id)}/trigger`);
  }

  deleteSchedule(id: string): Promise<void> {
    return this.request<void>("DELETE", `/v1/schedules/${encodeURIComponent(id)}`);
  }

  /** Submit a workflow: every step is stored, or none is. */
  submitWorkflow(name: string, steps: StepDefinition[]): Promise<Workflow> {
    return this.request<Workflow>("POST", "/v1/workflows", { name, steps });
  }

  /** Poll until every step of the workflow has finished. */
  async waitWorkflow(id: string, timeoutMs = 20_000): Promise<Workflow> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const workflow = await this.request<Workflow>("GET", `/v1/workflows/${id}`);
      if (workflow.finished) {
        return workflow;
      }
      if (Date.now() > deadline) {
        throw new Error(`workflow ${id} unfinished after ${timeoutMs} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function main(): Promise<number> {
  const client = new JobforgeClient(
    process.env.JOBFORGE_URL ?? "http://127.0.0.1:8080",
    process.env.JOBFORGE_API_KEY,
  );
  const jobs = [
    await client.submit("echo", { hello: "from typescript" }),
    await client.submit("fail_n_times", { times: 1 }),
    await client.submit("sleep", { ms: 20 }),
  ];
  console.log("submitted", jobs.map((j) => j.id).join(" "));
  for (const job of jobs) {
    const done = await client.wait(job.id);
    if (done.state !== "succeeded") {
      console.error(`job ${done.id} ended ${done.state}: ${done.last_error}`);
      return 1;
    }
    console.log(`${done.id} (${done.kind}) succeeded after ${done.attempt} attempt(s): ${JSON.stringify(done.result)}`);
  }
  try {
    await client.submit("no.such.kind");
    console.error("an unknown kind was accepted");
    return 1;
  } catch (error) {
    if (!(error instanceof ProblemError) || error.problem.status !== 422) {
      throw error;
    }
    console.log(`bad input answered ${error.problem.status} ${error.problem.type} (field ${error.problem.field})`);
  }
  // A schedule: declared twice (the second changes nothing), triggered now, removed.
  const definition = { cron: "0 * * * *", job: { kind: "echo", payload: { from: "typescript" } } };
  const first = await client.putSchedule("ts-hourly", definition);
  const again = await client.putSchedule("ts-hourly", definition);
  if (again.outcome !== "unchanged") {
    console.error(`the same schedule again answered ${again.outcome}`);
    return 1;
  }
  const triggered = await client.triggerSchedule("ts-hourly");
  const ran = await client.wait(triggered.job_id);
  if (ran.state !== "succeeded") {
    console.error(`the triggered job ended ${ran.state}`);
    return 1;
  }
  console.log(`schedule ts-hourly (${first.outcome}, next tick ${again.schedule.next_run_at}): triggered job succeeded`);
  await client.deleteSchedule("ts-hourly");
  // A workflow: charge, then ship and email in parallel, then close once both succeeded.
  const workflow = await client.submitWorkflow("ts-order", [
    { name: "charge", job: { kind: "echo", payload: { cents: 1200 } } },
    { name: "ship", after: ["charge"], job: { kind: "echo", payload: "parcel" } },
    { name: "email", after: ["charge"], job: { kind: "echo", payload: "receipt" } },
    { name: "close", after: ["ship", "email"], job: { kind: "echo", payload: "closed" } },
  ]);
  const finished = await client.waitWorkflow(workflow.id);
  if (finished.counts.succeeded !== 4) {
    console.error(`workflow ${finished.id}: ${JSON.stringify(finished.counts)}`);
    return 1;
  }
  console.log(`workflow ${finished.id}: ${finished.steps.length} steps succeeded`);
  const stats = await client.stats();
  console.log(`stats: ready=${stats.ready} in_flight=${stats.in_flight} succeeded=${stats.jobs.succeeded}`);
  console.log("typescript client: OK");
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
