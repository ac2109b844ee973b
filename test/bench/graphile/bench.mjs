// test/bench/graphile/bench.mjs - graphile-worker's side of the stream
// benchmark, measured the way hx_bench.mjs measures hybridexec.
//
//   A. wake-up latency: LAT_N sequential graphile_worker.add_job() calls on
//      an idle server (after WARM_N unrecorded warm-up jobs), each its own
//      transaction; the time from just before the client sends the statement
//      to the first statement of the task function, both taken with
//      process.hrtime.bigint() in this process.  The runner is at its
//      defaults (LISTEN/NOTIFY wake-up, pollInterval 2000 ms) with
//      concurrency 1.  Each job is waited for until it is gone from the jobs
//      table (completed), then the client idles 5 ms before the next one.
//   B. throughput: THRU_N no-op jobs added with one add_jobs() call while no
//      runner is up; then a runner starts with graphile-worker's
//      high-throughput setup: concurrency 16, local queue of 500
//      (worker.localQueue.size), batched completion (completeJobBatchDelay 0,
//      failJobBatchDelay 0) and a pool of 17 connections.  Timed from just
//      before the add_jobs statement until the jobs table is empty (polled
//      every 20 ms, deadline 600 s); runner start-up is inside the timing.
//
// Usage (graphile-worker and pg come from the scratch folder that
// install.sh fills; the script itself may live anywhere):
//   GRAPHILE_DIR=/tmp/hx-bench-graphile \
//   DATABASE_URL=postgres://postgres@127.0.0.1:5499/bench \
//   node test/bench/graphile/bench.mjs
// Env: LAT_N (300), WARM_N (20), THRU_N (20000); GW_CONCURRENCY (16),
// GW_LOCAL_QUEUE (500), GW_BATCH_DELAY (0; -1 disables batched completion),
// GW_POOL (17) tune measurement B.
//
// Prints one JSON line on stdout; progress and graphile-worker's warnings
// and errors go to stderr.  Exits non-zero on any failure.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// Resolve packages from the scratch folder, not from this script's location.
// graphile-worker 0.16+ is an ES module: import it by its resolved path.
const scratch = process.env.GRAPHILE_DIR || '/tmp/hx-bench-graphile';
const require = createRequire(path.join(scratch, 'package.json'));
const pg = require('pg');
const gwMain = require.resolve('graphile-worker');
const { run, runMigrations, Logger } = await import(pathToFileURL(gwMain).href);
let gwVersion;
for (let dir = path.dirname(gwMain); !gwVersion && dir !== path.dirname(dir); dir = path.dirname(dir)) {
	const f = path.join(dir, 'package.json');
	if (fs.existsSync(f)) {
		const p = JSON.parse(fs.readFileSync(f, 'utf8'));
		if (p.name === 'graphile-worker')
			gwVersion = p.version;
	}
}
if (!gwVersion)
	throw new Error(`cannot find graphile-worker's package.json above ${gwMain}`);

const url = process.env.DATABASE_URL;
if (!url)
	throw new Error('DATABASE_URL is not set');
const intEnv = (name, dflt) => {
	const v = parseInt(process.env[name] ?? String(dflt), 10);
	if (!Number.isFinite(v))
		throw new Error(`${name} is not an integer`);
	return v;
};
const latN = intEnv('LAT_N', 300);
const warmN = intEnv('WARM_N', 20);
const thruN = intEnv('THRU_N', 20000);
const concurrency = intEnv('GW_CONCURRENCY', 16);
const localQueueSize = intEnv('GW_LOCAL_QUEUE', 500);
const batchDelay = intEnv('GW_BATCH_DELAY', 0);
const poolSize = intEnv('GW_POOL', concurrency + 1);

const JOBS = 'graphile_worker._private_jobs';	// the jobs table (0.16+)
const hrnow = () => process.hrtime.bigint();
const nsToMs = (ns) => Number(ns) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

// graphile-worker's default logger prints info lines too; keep only warnings
// and errors, on stderr, so stdout carries just the JSON line.
const logger = new Logger(() => (level, message) => {
	if (level === 'error' || level === 'warning')
		console.error(`graphile-worker ${level}: ${message}`);
});

// Measurement A.
async function latency(client) {
	const started = new Map();	// job number -> resolve(hrtime at first statement)
	const runner = await run({
		connectionString: url,
		concurrency: 1,
		noHandleSignals: true,
		logger,
		taskList: {
			lat: async (payload) => {
				const t1 = hrnow();	// first statement
				const w = started.get(payload.i);
				if (w) {
					started.delete(payload.i);
					w(t1);
				}
			},
		},
	});
	const ms = [];
	try {
		for (let i = 0; i < warmN + latN; i++) {
			let timer;
			const firstStatement = new Promise((resolve, reject) => {
				timer = setTimeout(() => reject(new Error(`lat job ${i} not started within 10 s`)), 10000);
				started.set(i, resolve);
			});
			const t0wall = performance.timeOrigin + performance.now();
			const t0 = hrnow();
			const r = await client.query(
				"SELECT (graphile_worker.add_job('lat', json_build_object('i', $1::int, 't0', $2::float8))).id",
				[i, t0wall]);
			const t1 = await firstStatement;
			clearTimeout(timer);
			if (i >= warmN)
				ms.push(nsToMs(t1 - t0));
			// wait until the job is completed (its row deleted), then idle
			const deadline = Date.now() + 10000;
			while ((await client.query(`SELECT 1 FROM ${JOBS} WHERE id = $1`, [r.rows[0].id])).rowCount > 0) {
				if (Date.now() > deadline)
					throw new Error(`lat job ${i} not completed within 10 s`);
				await sleep(1);
			}
			await sleep(5);
		}
	} finally {
		await runner.stop();
	}
	if (ms.length !== latN)
		throw new Error(`expected ${latN} latency samples, got ${ms.length}`);
	ms.sort((a, b) => a - b);
	return { p50: pct(ms, 50), p95: pct(ms, 95), p99: pct(ms, 99) };
}

// Measurement B.
async function throughput(client) {
	await client.query(`DELETE FROM ${JOBS}`);
	let ran = 0;
	const t0 = hrnow();
	// one statement, one transaction: THRU_N job_spec rows (identifier,
	// payload, queue_name, run_at, max_attempts, job_key, priority, flags)
	const added = await client.query(
		`SELECT count(*)::int AS n FROM graphile_worker.add_jobs(
			 (SELECT array_agg(ROW('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec)
				FROM generate_series(1, $1::int)))`, [thruN]);
	const tAdded = hrnow();
	if (added.rows[0].n !== thruN)
		throw new Error(`add_jobs added ${added.rows[0].n} jobs, expected ${thruN}`);
	const runner = await run({
		connectionString: url,
		concurrency,
		maxPoolSize: poolSize,
		noHandleSignals: true,
		logger,
		preset: {
			worker: {
				localQueue: { size: localQueueSize },
				completeJobBatchDelay: batchDelay,
				failJobBatchDelay: batchDelay,
			},
		},
		taskList: { noop: async () => { ran++; } },
	});
	let t1;
	try {
		const deadline = t0 + 600n * 1000000000n;
		for (;;) {
			const r = await client.query(
				`SELECT count(*)::int AS n, count(*) FILTER (WHERE last_error IS NOT NULL)::int AS failed FROM ${JOBS}`);
			if (r.rows[0].failed > 0)
				throw new Error(`${r.rows[0].failed} noop jobs failed`);
			if (r.rows[0].n === 0)
				break;
			if (hrnow() > deadline)
				throw new Error(`${r.rows[0].n} jobs still queued after 600 s`);
			await sleep(20);
		}
		t1 = hrnow();
	} finally {
		await runner.stop();
	}
	if (ran !== thruN)
		throw new Error(`noop handler ran ${ran} times, expected ${thruN}`);
	return { seconds: nsToMs(t1 - t0) / 1000, submitSeconds: nsToMs(tAdded - t0) / 1000 };
}

await runMigrations({ connectionString: url, logger });
const client = new pg.Client({ connectionString: url });
await client.connect();
try {
	await client.query(`DELETE FROM ${JOBS}`);	// leftovers of an aborted run
	console.error(`graphile-worker ${gwVersion}: latency, ${warmN} warm-up + ${latN} sequential add_job`);
	const lat = await latency(client);
	console.error(`graphile-worker ${gwVersion}: throughput, ${thruN} jobs in one add_jobs` +
		` (concurrency ${concurrency}, localQueue.size ${localQueueSize}, batch delay ${batchDelay}, pool ${poolSize})`);
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
