// test/bench/hx_bench.mjs - hybridexec's side of the stream benchmark.
//
// Measures, against a server with hybridexec preloaded whose stream
// workers serve the database in DATABASE_URL:
//   A. wake-up latency: LAT_N sequential hx_submit() calls on an idle
//      server, each its own transaction; the time from just before the
//      client sends the statement to the handler's first statement (the
//      handler reads clock_timestamp() on entry; client and server share
//      the machine's clock);
//   B. throughput: THRU_N no-op tasks submitted in one transaction (one
//      hx_submit_batch() call, as graphile-worker's side uses add_jobs());
//      the time from just before the submit statement until all are done;
//   D. hx_await's wake-up: AWAIT_N tasks, each submitted by one session
//      and awaited by another (hx_await) while its handler sleeps 20 ms;
//      the time from the task's finished_at (stamped by the worker's done
//      statement, just before its commit) to hx_await returning, both read
//      on the server's clock.  No peer offers this, so no ratio.
// The same client library (node-postgres) and method as the graphile-worker
// side (graphile/bench.mjs), so the figures compare like with like.
// Prints one JSON line on stdout; progress goes to stderr.

import { pg, nowMs, sleep, pct, submitAndDrain } from './hx_common.mjs';

const url = process.env.DATABASE_URL;
const latN = parseInt(process.env.LAT_N || '300', 10);
const warmN = parseInt(process.env.WARM_N || '20', 10);
const thruN = parseInt(process.env.THRU_N || '20000', 10);


async function setup(client) {
	await client.query(`
		CREATE EXTENSION IF NOT EXISTS hybridexec;
		DROP TABLE IF EXISTS bench_lat_obs;
		CREATE UNLOGGED TABLE bench_lat_obs (i int, t0_ms float8, t1_ms float8);
		CREATE OR REPLACE FUNCTION bench_lat(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
		DECLARE
			t1 float8 := extract(epoch FROM clock_timestamp()) * 1000;
		BEGIN
			INSERT INTO bench_lat_obs VALUES ((p->>'i')::int, (p->>'t0')::float8, t1);
			PERFORM pg_notify('bench_done', p->>'i');
			RETURN '{}';
		END
		$$;
		CREATE OR REPLACE FUNCTION bench_noop(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT $1';
		CREATE OR REPLACE FUNCTION bench_await(p jsonb) RETURNS jsonb LANGUAGE sql
			AS 'SELECT jsonb_build_object(''slept'', pg_sleep(0.02) IS NULL)';
		SELECT hx_register('bench_lat', 'bench_lat(jsonb)');
		SELECT hx_register('bench_noop', 'bench_noop(jsonb)');
		SELECT hx_register('bench_await', 'bench_await(jsonb)');
		DELETE FROM hx_task WHERE task_type IN ('bench_lat', 'bench_noop', 'bench_await');
	`);
}

async function latency(client) {
	const waiters = new Map();
	client.on('notification', (msg) => {
		const w = waiters.get(msg.payload);
		if (w) {
			waiters.delete(msg.payload);
			w();
		}
	});
	await client.query('LISTEN bench_done');

	for (let i = 0; i < warmN + latN; i++) {
		const done = new Promise((resolve, reject) => {
			const timer = setTimeout(() => reject(new Error(`task ${i} not done within 10 s`)), 10000);
			waiters.set(String(i), () => { clearTimeout(timer); resolve(); });
		});
		const t0 = nowMs();
		await client.query(
			"SELECT hx_submit('bench_lat', jsonb_build_object('i', $1::int, 't0', $2::float8), origin => 'user')",
			[i, t0]);
		await done;
		await sleep(5);
	}
	const res = await client.query('SELECT t1_ms - t0_ms AS ms FROM bench_lat_obs WHERE i >= $1 ORDER BY 1', [warmN]);
	const ms = res.rows.map((r) => Number(r.ms));
	if (ms.length !== latN)
		throw new Error(`expected ${latN} observations, got ${ms.length}`);
	return { p50: pct(ms, 50), p95: pct(ms, 95), p99: pct(ms, 99) };
}

async function throughput(client) {
	return submitAndDrain(client, 'bench_noop', thruN);
}

async function awaitLatency(client) {
	const n = parseInt(process.env.AWAIT_N || '200', 10);
	const waiter = new pg.Client({ connectionString: url });
	await waiter.connect();
	const ms = [];
	try {
		for (let i = 0; i < warmN + n; i++) {
			const sub = await client.query("SELECT hx_submit('bench_await', '{}', origin => 'user') AS id");
			const id = sub.rows[0].id;
			const back = await waiter.query(
				"SELECT a.status, clock_timestamp() AS back FROM hx_await(ARRAY[$1::bigint], '10 seconds') a", [id]);
			if (back.rows[0].status !== 'done')
				throw new Error(`task ${id} is ${back.rows[0].status} after 10 s`);
			const gap = await waiter.query(
				'SELECT extract(epoch FROM $2::timestamptz - finished_at) * 1000 AS ms FROM hx_task WHERE id = $1',
				[id, back.rows[0].back]);
			if (i >= warmN)
				ms.push(Number(gap.rows[0].ms));
		}
	} finally {
		await waiter.end();
	}
	ms.sort((a, b) => a - b);
	return { n, p50: pct(ms, 50), p99: pct(ms, 99) };
}

// C. the cost of a classification: hx_decide() (the rule engine inside
// every hx_submit) called CLS_N times in one statement, default rules plus
// a few more that do not match, so each call walks several rules.
async function classifyCost(client) {
	const n = parseInt(process.env.CLS_N || '200000', 10);
	await client.query(`
		INSERT INTO hx_rule (name, position, task_type, route) VALUES ('bench-a', 1, 'no-such-type', 'stream')
			ON CONFLICT DO NOTHING;
		INSERT INTO hx_rule (name, position, department, route) VALUES ('bench-b', 2, 'no-such-dept', 'stream')
			ON CONFLICT DO NOTHING;
		INSERT INTO hx_rule (name, position, payload_match, route) VALUES ('bench-c', 3, '{"tier": "gold"}', 'stream')
			ON CONFLICT DO NOTHING;`);
	const t0 = nowMs();
	await client.query(`SELECT count(d.route) FROM generate_series(1, $1) g,
		LATERAL hx_decide('bench_noop', '{"tier": "silver"}', sla => '30 minutes',
						  at => '2026-06-15 12:00+00'::timestamptz + g * interval '1 second') d`, [n]);
	const t1 = nowMs();
	await client.query("DELETE FROM hx_rule WHERE name IN ('bench-a', 'bench-b', 'bench-c')");
	return ((t1 - t0) * 1000) / n;
}

const client = new pg.Client({ connectionString: url });
await client.connect();
try {
	await setup(client);
	console.error(`hybridexec: latency, ${warmN} warm-up + ${latN} sequential submits`);
	const lat = await latency(client);
	console.error(`hybridexec: throughput, ${thruN} tasks in one transaction`);
	const thr = await throughput(client);
	console.error('hybridexec: classification cost');
	const cls = await classifyCost(client);
	console.error('hybridexec: hx_await wake-up');
	const aw = await awaitLatency(client);
	const ver = await client.query("SELECT extversion FROM pg_extension WHERE extname = 'hybridexec'");
	console.log(JSON.stringify({
		peer: 'hybridexec',
		version: ver.rows[0].extversion,
		lat_n: latN,
		lat_p50_ms: +lat.p50.toFixed(3),
		lat_p95_ms: +lat.p95.toFixed(3),
		lat_p99_ms: +lat.p99.toFixed(3),
		thru_n: thruN,
		thru_seconds: +thr.seconds.toFixed(3),
		thru_submit_seconds: +thr.submitSeconds.toFixed(3),
		thru_per_s: Math.round(thruN / thr.seconds),
		classify_us: +cls.toFixed(2),
		await_n: aw.n,
		await_p50_ms: +aw.p50.toFixed(3),
		await_p99_ms: +aw.p99.toFixed(3),
	}));
} finally {
	await client.end();
}
