// test/bench/hx_worker_bench.mjs - the external executor's side of the
// stream benchmark: hx_worker --noop processes (outside the server, like
// graphile-worker's runner), measured the way graphile/bench.mjs measures
// graphile-worker.
//
//   A. wake-up latency: LAT_N sequential hx_submit() calls of a type
//      without an in-database handler (after WARM_N unrecorded warm-ups),
//      each its own transaction, on an idle server with one hx_worker
//      LISTENing (poll interval 2 s, as graphile-worker's default); the
//      time from just before the client sends the statement to the moment
//      hx_claim() handed the task to hx_worker (hx_task.started_at, the
//      server's clock_timestamp(); client and server share the clock).
//      Each task is waited for until done, then the client idles 5 ms.
//   B. throughput: THRU_N no-op tasks submitted in one transaction (one
//      hx_submit_batch() call) while HXW_PROCS hx_worker --noop processes
//      (each claiming up to HXW_CLAIM tasks per hx_claim call) are up;
//      timed from just before the submit until all are done.
//
// Env: DATABASE_URL, HX_WORKER (path of hx_worker), LAT_N (300), WARM_N
// (20), THRU_N (20000), HXW_PROCS (4), HXW_CLAIM (500).
// Prints one JSON line on stdout; progress goes to stderr.

import { spawn } from 'node:child_process';
import { pg, nowMs, sleep, pct, submitAndDrain } from './hx_common.mjs';

const url = process.env.DATABASE_URL;
const hxw = process.env.HX_WORKER || 'hx_worker';
const latN = parseInt(process.env.LAT_N || '300', 10);
const warmN = parseInt(process.env.WARM_N || '20', 10);
const thruN = parseInt(process.env.THRU_N || '20000', 10);
const procs = parseInt(process.env.HXW_PROCS || '4', 10);
const claimMax = parseInt(process.env.HXW_CLAIM || '500', 10);

// Starts one hx_worker --noop and resolves once it has connected (and
// LISTENs); rejects when it exits first.
function startWorker(name, concurrency) {
	return new Promise((resolve, reject) => {
		const child = spawn(hxw, ['--dsn', url, '--noop', '--name', name, '--poll', '2',
			'--concurrency', String(concurrency),
			'--type', 'bench_ext_lat', '--type', 'bench_ext_noop'],
			{ stdio: ['ignore', 'ignore', 'pipe'] });
		let err = '';
		child.stderr.on('data', (d) => {
			err += d;
			if (err.includes('connected;'))
				resolve(child);
		});
		child.on('exit', (code) => reject(new Error(`hx_worker exited with ${code}: ${err}`)));
	});
}

function stopWorker(child) {
	return new Promise((resolve) => {
		child.removeAllListeners('exit');
		child.on('exit', (code) => resolve(code));
		child.kill('SIGTERM');
	});
}

async function setup(client) {
	await client.query(`
		CREATE EXTENSION IF NOT EXISTS hybridexec;
		SELECT hx_register('bench_ext_lat');
		SELECT hx_register('bench_ext_noop');
		DELETE FROM hx_task WHERE task_type IN ('bench_ext_lat', 'bench_ext_noop');
	`);
}

async function latency(client) {
	const ms = [];
	for (let i = 0; i < warmN + latN; i++) {
		const t0 = nowMs();
		const r = await client.query(
			"SELECT hx_submit('bench_ext_lat', jsonb_build_object('i', $1::int), origin => 'user') AS id", [i]);
		const id = r.rows[0].id;
		const deadline = t0 + 10000;
		for (;;) {
			const s = await client.query(
				"SELECT status, extract(epoch FROM started_at) * 1000 AS t1 FROM hx_task WHERE id = $1", [id]);
			if (s.rows[0].status === 'done') {
				if (i >= warmN)
					ms.push(Number(s.rows[0].t1) - t0);
				break;
			}
			if (nowMs() > deadline)
				throw new Error(`task ${id} not done within 10 s`);
			await sleep(1);
		}
		await sleep(5);
	}
	ms.sort((a, b) => a - b);
	return { p50: pct(ms, 50), p95: pct(ms, 95), p99: pct(ms, 99) };
}

async function throughput(client) {
	return (await submitAndDrain(client, 'bench_ext_noop', thruN)).seconds;
}

const client = new pg.Client({ connectionString: url });
await client.connect();
try {
	await setup(client);
	console.error(`hx_worker: latency, ${warmN} warm-up + ${latN} sequential submits, one hx_worker`);
	let w = await startWorker('bench-lat', 1);
	const lat = await latency(client);
	await stopWorker(w);
	console.error(`hx_worker: throughput, ${thruN} tasks in one transaction, ${procs} hx_worker --noop`);
	const ws = await Promise.all(Array.from({ length: procs }, (_, i) => startWorker(`bench-${i}`, claimMax)));
	const seconds = await throughput(client);
	const codes = await Promise.all(ws.map(stopWorker));
	if (codes.some((c) => c !== 0))
		throw new Error(`hx_worker exit codes ${codes}`);
	console.log(JSON.stringify({
		peer: 'hx_worker',
		lat_n: latN,
		lat_p50_ms: +lat.p50.toFixed(3),
		lat_p95_ms: +lat.p95.toFixed(3),
		lat_p99_ms: +lat.p99.toFixed(3),
		thru_n: thruN,
		thru_seconds: +seconds.toFixed(3),
		thru_per_s: Math.round(thruN / seconds),
		procs,
		claim: claimMax,
	}));
} finally {
	await client.end();
}
