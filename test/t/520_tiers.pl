# 520_tiers.pl - tiered results end to end: a quick answer streamed now,
# the authoritative one from a window later.
#
# "draft" (streamed for users) is refined by "final_answer" (routed to a
# window by the rules, as every origin-refine task of the type). With the
# stream workers and a window run, proves:
#   1. when a draft is done, its next tier is queued at once: same payload,
#      parent_id and tier 2, origin refine, waiting for the window;
#   2. hx_result moves from the draft (tier 1, not final) to the final
#      answer (tier 2, final) once the window has run, whichever task of
#      the chain it is asked about;
#   3. a watched table's result column is rewritten by each tier;
#   4. a tier that dies leaves the best earlier result in place; a window's
#      chunk of drafts gets all its next tiers in the chunk's transaction;
#   5. a refinement that no rule takes is a warning: the draft stays done.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('tiers', 'hybridexec.scheduler_naptime' => '100ms');
ok(HxTest::wait_workers($node, 2), 'two stream workers');
$node->safe_psql('postgres', q{
	CREATE FUNCTION draft(p jsonb) RETURNS jsonb LANGUAGE sql
		AS $$SELECT jsonb_build_object('answer', 'draft of ' || (p->>'q'))$$;
	CREATE FUNCTION final_batch(ps jsonb[]) RETURNS jsonb[] LANGUAGE plpgsql AS $$
	BEGIN
		IF EXISTS (SELECT 1 FROM unnest(ps) p WHERE p ? 'poison') THEN
			RAISE EXCEPTION 'final answer failed';
		END IF;
		RETURN ARRAY(SELECT jsonb_build_object('answer', 'final ' || (p->>'q')) FROM unnest(ps) p);
	END $$;
	CREATE FUNCTION final_one(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		IF p ? 'poison' THEN
			RAISE EXCEPTION 'final answer failed';
		END IF;
		RETURN jsonb_build_object('answer', 'final ' || (p->>'q'));
	END $$;
	SELECT hx_register('final_answer', 'final_one(jsonb)', batch_handler => 'final_batch(jsonb[])',
					   max_attempts => 1);
	SELECT hx_register('draft', 'draft(jsonb)', refine_with => 'final_answer');
	INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('overnight', '0 3 * * *', 100);
	INSERT INTO hx_rule (name, position, task_type, origin, route, window_name)
	VALUES ('refine overnight', 1, 'final_answer', 'refine', 'batch', 'overnight');
});

# --- 1. the next tier is queued when the first is done ---------------------------
my $d1 = $node->safe_psql('postgres', q{SELECT hx_submit('draft', '{"q": "why"}', origin => 'user')});
is($node->safe_psql('postgres', "SELECT hx_wait($d1, '30 seconds')"), 'done', 'the draft streamed at once');
my $t2 = $node->safe_psql('postgres', "SELECT id FROM hx_task WHERE parent_id = $d1");
isnt($t2, '', 'a next tier was queued with it');
is( $node->safe_psql('postgres', qq{
		SELECT task_type || ' ' || tier || ' ' || origin || ' ' || route || ' ' || window_name || ' ' || status
			   || ' ' || (payload = '{"q": "why"}') || ' ' || (reason LIKE 'tier 2 of task $d1: rule "refine overnight"%')
		  FROM hx_task WHERE id = $t2}),
	'final_answer 2 refine batch overnight queued true true', 'same payload, tier 2, origin refine, waiting for its window');

# --- 2. hx_result: draft first, final after the window ---------------------------
is($node->safe_psql('postgres', "SELECT task_id || ' ' || tier || ' ' || final || ' ' || (result->>'answer') FROM hx_result($d1)"),
	"$d1 1 false draft of why", 'hx_result gives the draft, not final');
is($node->safe_psql('postgres', "SELECT task_id FROM hx_result($t2)"), $d1, 'asked about the second tier too');
my $run = $node->safe_psql('postgres', q{SELECT hx_run_window('overnight')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"), 'the window ran');
is($node->safe_psql('postgres', "SELECT task_id || ' ' || tier || ' ' || final || ' ' || (result->>'answer') FROM hx_result($d1)"),
	"$t2 2 true final why", 'then the final answer, from either task of the chain');
is($node->safe_psql('postgres', "SELECT count(*) FROM hx_task WHERE parent_id = $t2"), '0', 'the last tier refines no further');

# --- 3. a watched table is rewritten by each tier --------------------------------
$node->safe_psql('postgres', q{
	CREATE TABLE questions (id int PRIMARY KEY, q text, answer jsonb);
	SELECT hx_attach('questions', 'draft', columns => ARRAY['q'], result_column => 'answer', origin => 'user');
	INSERT INTO questions (id, q) VALUES (1, 'how');
});
ok( $node->poll_query_until('postgres', q{SELECT answer->>'answer' = 'draft of how' FROM questions WHERE id = 1}),
	'the row gets the draft first');
$run = $node->safe_psql('postgres', q{SELECT hx_run_window('overnight')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"), 'the window ran again');
is($node->safe_psql('postgres', q{SELECT answer->>'answer' FROM questions WHERE id = 1}),
	'final how', 'then the final answer over it');

# --- 4. a dead tier leaves the best earlier result --------------------------------
my $d3 = $node->safe_psql('postgres', q{SELECT hx_submit('draft', '{"q": "what", "poison": true}', origin => 'user')});
is($node->safe_psql('postgres', "SELECT hx_wait($d3, '30 seconds')"), 'done', 'a draft whose refinement will fail');
$run = $node->safe_psql('postgres', q{SELECT hx_run_window('overnight')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"), 'the window ran');
ok( $node->poll_query_until('postgres', "SELECT status = 'dead' FROM hx_task WHERE parent_id = $d3"),
	'its next tier died');
is($node->safe_psql('postgres', "SELECT task_id || ' ' || final || ' ' || (result->>'answer') FROM hx_result($d3)"),
	"$d3 false draft of what", 'hx_result still gives the draft');

# --- 4b. a window's chunk of drafts gets its next tiers together ---------------------
$node->safe_psql('postgres', q{
	SELECT count(*) FROM hx_submit_batch('draft', ARRAY(SELECT jsonb_build_object('q', 'bulk ' || g)
														  FROM generate_series(1, 30) g))});
$run = $node->safe_psql('postgres', q{SELECT hx_run_window('nightly')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"), 'a chunk of 30 drafts ran');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM hx_task c JOIN hx_task p ON p.id = c.parent_id
		 WHERE p.payload->>'q' LIKE 'bulk %' AND c.tier = 2 AND c.payload = p.payload AND c.status = 'queued'}),
	'30', 'each of them has its next tier, committed with the chunk');

# --- 5. a refinement no rule takes: a warning, the draft stays done ---------------
$node->safe_psql('postgres', q{
	DELETE FROM hx_rule WHERE name = 'refine overnight';
	UPDATE hx_rule SET enabled = false WHERE window_name IS NOT NULL OR route = 'batch';
	UPDATE hx_rule SET enabled = false WHERE origin IS DISTINCT FROM 'user';
});
my $d4 = $node->safe_psql('postgres', q{SELECT hx_submit('draft', '{"q": "who"}', origin => 'user')});
is($node->safe_psql('postgres', "SELECT hx_wait($d4, '30 seconds')"), 'done', 'a draft no rule can refine is done');
is($node->safe_psql('postgres', "SELECT count(*) FROM hx_task WHERE parent_id = $d4"), '0', 'with no next tier');
like(slurp_file($node->logfile), qr/could not submit the next tier of task $d4: no rule in hx_rule matches/,
	'and a warning that says why');

$node->stop;
done_testing();
