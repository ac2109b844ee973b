// test/bench/graphile/bench.mjs - graphile-worker's side of the stream
// benchmark, measured the way hx_bench.mjs measures hybridexec:
//   A. wake-up latency: LAT_N sequential graphile_worker.add_job() calls on
//      an idle server, each its own transaction; the time from just before
//      the client sends the statement to the task function's first line
//      (runner at its defaults: LISTEN/NOTIFY wake-up, concurrency 1);
//   B. throughput: THRU_N no-op jobs added with one add_jobs() call; the time
//      until the jobs table is empty, drained by a runner with the local
//      queue (size 500), concurrency 16 and batched completion
//      (completeJobBatchDelay 0), graphile-worker's high-throughput setup.
// Prints one JSON line on stdout; progress goes to stderr.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const scratch = process.env.GRAPHILE_DIR || '/tmp/hx-bench-graphile';
const require = createRequire(path.join(scratch, 'package.json'));
const pg = require('pg');
const { run, runMigrations } = require('graphile-worker');
const gwVersion = JSON.parse(fs.readFileSync(path.join(scratch, 'node_modules/graphile-worker/package.json'), 'utf8')).version;

const url = process.env.DATABASE_URL;
const latN = parseInt(process.env.LAT_N || '300', 10);
const warmN = parseInt(process.env.WARM_N || '20', 10);
const thruN = parseInt(process.env.THRU_N || '20000', 10);

const nowMs = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const { Logger } = require('graphile-worker');
const logger = new Logger(() => (level, message) => { if (level === 'error' || level === 'warning') console.error(message); });

async function latency(client) {
	const seen = new Map();
	const waiters = new Map();
	const runner = await run({
		connectionString: url,
		concurrency: 1,
		noHandleSignals: true,
		logger,
		taskList: {
			lat: async (payload) => {
				const t1 = nowMs();
				seen.set(payload.i, t1);
				const w = waiters.get(payload.i);
				if (w) { waiters.delete(payload.i); w(); }
			},
		},
	});
	const ms = [];
	try {
		for (let i = 0; i < warmN + latN; i++) {
			const done = new Promise((resolve, reject) => {
				const timer = setTimeout(() => reject(new Error(`job ${i} not run within 10 s`)), 10000);
				waiters.set(i, () => { clearTimeout(timer); resolve(); });
			});
			const t0 = nowMs();
			await client.query("SELECT graphile_worker.add_job('lat', json_build_object('i', $1::int))", [i]);
			await done;
			if (i >= warmN)
				ms.push(seen.get(i) - t0);
			await sleep(5);
		}
	} finally {
		await runner.stop();
	}
	ms.sort((a, b) => a - b);
	return { p50: pct(ms, 50), p95: pct(ms, 95), p99: pct(ms, 99) };
}

async function throughput(client) {
	await client.query('DELETE FROM graphile_worker._private_jobs');
	const t0 = nowMs();
	await client.query(
		`SELECT count(*) FROM graphile_worker.add_jobs(
			 (SELECT array_agg(ROW('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec)
				FROM generate_series(1, $1)))`, [thruN]);
	const tAdded = nowMs();
	const runner = await run({
		connectionString: url,
		concurrency: 16,
		maxPoolSize: 17,
		noHandleSignals: true,
		logger,
		preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
		taskList: { noop: async () => {} },
	});
	try {
		const deadline = t0 + 600000;
		for (;;) {
			const r = await client.query('SELECT count(*)::int AS n FROM graphile_worker._private_jobs');
			if (r.rows[0].n === 0)
				break;
			if (nowMs() > deadline)
				throw new Error(`${r.rows[0].n} jobs still queued after 600 s`);
			await sleep(20);
		}
	} finally {
		await runner.stop();
	}
	const t1 = nowMs();
	return { seconds: (t1 - t0) / 1000, submitSeconds: (tAdded - t0) / 1000 };
}

await runMigrations({ connectionString: url, logger });
const client = new pg.Client({ connectionString: url });
await client.connect();
try {
	console.error(`graphile-worker ${gwVersion}: latency, ${warmN} warm-up + ${latN} sequential add_job`);
	const lat = await latency(client);
	console.error(`graphile-worker ${gwVersion}: throughput, ${thruN} jobs in one add_jobs`);
	const thr = await throughput(client);
	console.log(JSON.stringify({
		peer: 'graphile-worker',
		version: gwVersion,
		lat_n: latN,
		lat_p50_ms: +lat.p50.toFixed(3),
		lat_p95_ms: +lat.p95.toFixed(3),
		lat_p99_ms: +lat.p99.toFixed(3),
		thru_n: thruN,
		thru_seconds: +thr.seconds.toFixed(3),
		thru_submit_seconds: +thr.submitSeconds.toFixed(3),
		thru_per_s: Math.round(thruN / thr.seconds),
	}));
} finally {
	await client.end();
}
