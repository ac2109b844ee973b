// test/bench/hx_common.mjs - what hybridexec's two sides of the stream
// benchmark (hx_bench.mjs: in-database workers; hx_worker_bench.mjs:
// hx_worker --noop) share: node-postgres from the benchmark's scratch
// folder, the clock, percentiles, and the throughput measurement.

import { createRequire } from 'node:module';
import path from 'node:path';

const scratch = process.env.GRAPHILE_DIR || '/tmp/hx-bench-graphile';
export const pg = createRequire(path.join(scratch, 'package.json'))('pg');

export const nowMs = () => performance.timeOrigin + performance.now();
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

// Submits n no-op tasks of taskType in one transaction (hx_submit_batch,
// as graphile-worker's side uses add_jobs()) and waits until all are done;
// fails unless each was done at its first attempt.  Returns the seconds
// from just before the submit until all were done, and the submit's own.
export async function submitAndDrain(client, taskType, n) {
	const t0 = nowMs();
	await client.query(`SELECT count(*) FROM hx_submit_batch($2,
		(SELECT array_agg('{}'::jsonb) FROM generate_series(1, $1)), origin => 'user')`, [n, taskType]);
	const tSubmitted = nowMs();
	const deadline = t0 + 600000;
	for (;;) {
		// the unfinished tasks only, as graphile-worker's side counts its jobs
		// table: with these statuses hx_task_history (finished tasks, its
		// CHECK constraint) is not scanned, so the poll does not grow with it
		const r = await client.query("SELECT count(*)::int AS n FROM hx_task WHERE task_type = $1 AND status IN ('queued', 'running', 'failed')", [taskType]);
		if (r.rows[0].n === 0)
			break;
		if (nowMs() > deadline)
			throw new Error(`${r.rows[0].n} tasks still not done after 600 s`);
		await sleep(20);
	}
	const t1 = nowMs();
	const bad = await client.query("SELECT count(*)::int AS n FROM hx_task WHERE task_type = $1 AND (status <> 'done' OR attempts <> 1)", [taskType]);
	if (bad.rows[0].n !== 0)
		throw new Error(`${bad.rows[0].n} noop tasks not done exactly once`);
	return { seconds: (t1 - t0) / 1000, submitSeconds: (tSubmitted - t0) / 1000 };
}
