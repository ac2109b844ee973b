/*
 * src/sql/rules.sql
 *
 * Part of the install script: classification rules (hx_rule), their
 * validation, the invalidation of the per-backend cache of rules and types
 * (src/rules.c), the rule engine's SQL face (hx_decide, hx_classify), the
 * cost-benefit condition worth_streaming, and the default rules.
 */

/* ------------------------------------------------------------------------
 * Classification rules
 * ------------------------------------------------------------------------ */

-- [storage]
CREATE TABLE hx_rule (
	name			text PRIMARY KEY,
	position		integer NOT NULL,
	enabled			boolean NOT NULL DEFAULT true,
	task_type		text,
	origin			text,
	department		text,
	min_sla			interval,
	max_sla			interval,
	payload_match	jsonb,
	local_from		time,
	local_until		time,
	days			integer[],
	time_zone		text,
	budget_exhausted boolean,
	worth_streaming	boolean,
	route			text NOT NULL,
	window_name		text REFERENCES hx_window (name) ON UPDATE CASCADE,
	description		text,
	sample			numeric,
	CONSTRAINT hx_rule_name_check CHECK (length(name) <= 200),
	CONSTRAINT hx_rule_sample_check CHECK (sample > 0 AND sample <= 1),
	CONSTRAINT hx_rule_sla_check CHECK (min_sla <= interval '100 years' AND max_sla <= interval '100 years')
);

CREATE INDEX hx_rule_position_idx ON hx_rule (position, name);
-- [/storage]

COMMENT ON TABLE hx_rule IS
'Classification rules: enabled rules are tried in (position, name) order, the first whose conditions all hold decides the route; NULL conditions match anything';
COMMENT ON COLUMN hx_rule.name IS 'Unique rule name (at most 200 characters), reported by hx_classify() and stored on each task';
COMMENT ON COLUMN hx_rule.position IS 'Lower positions are tried first';
COMMENT ON COLUMN hx_rule.enabled IS 'Disabled rules are skipped';
COMMENT ON COLUMN hx_rule.task_type IS 'Condition: the task type equals this';
COMMENT ON COLUMN hx_rule.origin IS 'Condition: the task origin equals this (user = someone is waiting)';
COMMENT ON COLUMN hx_rule.department IS 'Condition: the task department equals this';
COMMENT ON COLUMN hx_rule.min_sla IS 'Condition: the effective SLA is at least this (a task without SLA or deadline has an infinite SLA)';
COMMENT ON COLUMN hx_rule.max_sla IS 'Condition: the effective SLA is below this (tasks without SLA or deadline never match)';
COMMENT ON COLUMN hx_rule.payload_match IS 'Condition: the payload contains this JSON object (jsonb @>)';
COMMENT ON COLUMN hx_rule.local_from IS 'Condition with local_until: local time of day in [local_from, local_until); wraps past midnight when local_from > local_until';
COMMENT ON COLUMN hx_rule.local_until IS 'End (exclusive) of the local time-of-day condition';
COMMENT ON COLUMN hx_rule.days IS 'Condition: local ISO day of week (1 = Monday ... 7 = Sunday) is one of these';
COMMENT ON COLUMN hx_rule.time_zone IS 'Time zone of the time-of-day and day conditions; NULL = hybridexec.time_zone';
COMMENT ON COLUMN hx_rule.budget_exhausted IS 'Condition: true = one of the task department''s hx_budget rows is used up (hx_budget_exhausted), false = none is; NULL = do not look (the only conditions that cost a query)';
COMMENT ON COLUMN hx_rule.worth_streaming IS 'Condition: true = the latency streaming saves is worth more than its extra cost now (hx_worth_streaming), false = it is not; NULL = do not look';
COMMENT ON COLUMN hx_rule.route IS 'Decision: stream (run now) or batch (wait for window_name)';
COMMENT ON COLUMN hx_rule.window_name IS 'Decision for route batch: the hx_window the task waits for';
COMMENT ON COLUMN hx_rule.description IS 'Free text for humans';
COMMENT ON COLUMN hx_rule.sample IS 'Condition for a percentage rollout: the rule takes only this share (0 < sample <= 1) of the tasks its other conditions match, chosen by hx_sample_point(name, dedupe key, or the id when there is none) < sample, so a key always takes the same path; NULL = all';

CREATE FUNCTION _hybridexec.hx_rule_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF NEW.name IS NULL OR NEW.name = '' THEN
		RAISE EXCEPTION 'hx_rule name must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Name the rule after what it does, such as ''fraud-streams''.';
	END IF;
	IF NEW.route IS NULL OR NEW.route NOT IN ('stream', 'batch') THEN
		RAISE EXCEPTION 'hx_rule "%": unknown route "%"', NEW.name, NEW.route
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'route must be ''stream'' or ''batch''.';
	END IF;
	IF NEW.route = 'batch' AND NEW.window_name IS NULL THEN
		RAISE EXCEPTION 'hx_rule "%": route batch needs a window_name', NEW.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Set window_name to one of the windows in hx_window.';
	END IF;
	IF NEW.route = 'batch'
	   AND NOT EXISTS (SELECT 1 FROM hx_window w WHERE w.name = NEW.window_name) THEN
		RAISE EXCEPTION 'hx_rule "%": unknown window "%"', NEW.name, NEW.window_name
			USING ERRCODE = 'foreign_key_violation',
				  HINT = 'Create the window in hx_window first, or use one of: '
				  || coalesce((SELECT string_agg(quote_literal(name), ', ' ORDER BY name) FROM hx_window), 'none') || '.';
	END IF;
	IF NEW.route = 'stream' AND NEW.window_name IS NOT NULL THEN
		RAISE EXCEPTION 'hx_rule "%": route stream takes no window_name', NEW.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Set window_name to NULL, or route to ''batch''.';
	END IF;
	IF NEW.min_sla < interval '0' OR NEW.max_sla < interval '0' THEN
		RAISE EXCEPTION 'hx_rule "%": SLA bounds must not be negative', NEW.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'min_sla and max_sla are durations such as ''5 seconds''; leave them NULL for no bound.';
	END IF;
	IF NEW.min_sla >= NEW.max_sla THEN
		RAISE EXCEPTION 'hx_rule "%": min_sla % is not below max_sla %', NEW.name, NEW.min_sla, NEW.max_sla
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The rule matches SLAs in [min_sla, max_sla); make min_sla smaller than max_sla.';
	END IF;
	PERFORM hx_check_time_condition(format('hx_rule "%s"', NEW.name), NEW.local_from, NEW.local_until, NEW.days, NEW.time_zone);
	IF NEW.payload_match IS NOT NULL AND jsonb_typeof(NEW.payload_match) <> 'object' THEN
		RAISE EXCEPTION 'hx_rule "%": payload_match must be a JSON object', NEW.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example {"tier": "gold"} matches payloads containing that key and value.';
	END IF;
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_rule_check() IS 'Trigger: rejects invalid hx_rule rows with a clear error';

CREATE TRIGGER hx_rule_check BEFORE INSERT OR UPDATE ON hx_rule
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_rule_check();

/*
 * Backends cache rules and types; any change to those tables sends a
 * relcache invalidation at commit so every backend reloads them.
 */
CREATE FUNCTION _hybridexec.hx_cache_invalidate() RETURNS trigger
AS 'MODULE_PATHNAME', 'hx_cache_invalidate' LANGUAGE C;

COMMENT ON FUNCTION _hybridexec.hx_cache_invalidate() IS 'Trigger: tells every backend to reload its cached rules and task types (on hx_rule, hx_type), or forget the price rules its ledger trigger kept (on hx_price, hx_price_period)';

CREATE TRIGGER hx_rule_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hx_rule
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_cache_invalidate();
CREATE TRIGGER hx_type_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hx_type
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_cache_invalidate();

CREATE FUNCTION hx_decide(task_type text,
						  payload jsonb DEFAULT '{}',
						  sla interval DEFAULT NULL,
						  origin text DEFAULT 'background',
						  priority integer DEFAULT 0,
						  department text DEFAULT NULL,
						  dedupe_key text DEFAULT NULL,
						  deadline timestamptz DEFAULT NULL,
						  at timestamptz DEFAULT now(),
						  OUT route text, OUT window_name text,
						  OUT rule_name text, OUT reason text)
RETURNS record
AS 'MODULE_PATHNAME', 'hx_decide' LANGUAGE C STABLE;

COMMENT ON FUNCTION hx_decide(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz) IS
'The rule engine behind hx_submit() and hx_classify(): route, window, rule and reason, without a cost estimate';

CREATE FUNCTION hx_classify(task_type text,
							payload jsonb DEFAULT '{}',
							sla interval DEFAULT NULL,
							origin text DEFAULT 'background',
							priority integer DEFAULT 0,
							department text DEFAULT NULL,
							dedupe_key text DEFAULT NULL,
							deadline timestamptz DEFAULT NULL,
							at timestamptz DEFAULT now())
RETURNS TABLE (route text, window_name text, rule_name text, reason text, est_cost numeric)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT d.route, d.window_name, d.rule_name, d.reason,
		   hx_price_at(hx_classify.task_type, d.route, hx_classify.at)
	  FROM hx_decide(task_type, payload, sla, origin, priority, department,
					 dedupe_key, deadline, at) d
$$;

COMMENT ON FUNCTION hx_classify(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz) IS
'The decision hx_submit() would make for this task at that moment, with its estimated cost; queues nothing';

CREATE FUNCTION hx_sample_point(rule_name text, key text) RETURNS double precision
AS 'MODULE_PATHNAME', 'hx_sample_point' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION hx_sample_point(text, text) IS
'Where a task falls in a sampled rule''s rollout, in [0, 1): a hash of the key (the task''s dedupe key, or its id as text) salted with the rule''s name; the rule takes the task when this is below its sample';

/* ------------------------------------------------------------------------
 * Cost-benefit routing
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_latency_value(task_type text, payload jsonb) RETURNS numeric
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF payload ? 'latency_value' THEN
		BEGIN
			RETURN (payload->>'latency_value')::numeric;
		EXCEPTION WHEN invalid_text_representation THEN
			RAISE EXCEPTION 'payload latency_value must be a number, not "%"', payload->>'latency_value'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'It is the value of an hour of latency, in the price currency, such as 2.5.';
		END;
	END IF;
	RETURN (SELECT y.latency_value FROM hx_type y WHERE y.task_type = hx_latency_value.task_type);
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_latency_value(text, jsonb) IS
'Value of an hour of latency for a task: the payload''s "latency_value" if given, else hx_type.latency_value (NULL = unknown)';

CREATE FUNCTION _hybridexec.hx_batch_wait(at timestamptz DEFAULT now(), window_name text DEFAULT NULL)
RETURNS interval
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT coalesce((SELECT hx_cron_next(w.schedule, at, hx_cron_time_zone()) - at
					   FROM hx_window w WHERE w.enabled AND w.name = hx_batch_wait.window_name),
					(SELECT min(hx_cron_next(w.schedule, at, hx_cron_time_zone())) - at
					   FROM hx_window w WHERE w.enabled))
$$;

COMMENT ON FUNCTION _hybridexec.hx_batch_wait(timestamptz, text) IS
'How long a task submitted at "at" waits at least on the batch path: until the next scheduled start of its window (window_name), or, without one that is enabled, of the soonest enabled window (NULL without windows)';

CREATE FUNCTION hx_worth_streaming(task_type text, payload jsonb DEFAULT '{}',
								   at timestamptz DEFAULT now(), window_name text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT coalesce(hx_latency_value(task_type, payload)
					* extract(epoch FROM hx_batch_wait(at, window_name))::numeric / 3600
					> coalesce(hx_price_at(task_type, 'stream', at), 0)
					  - coalesce(hx_price_at(task_type, 'batch', at), 0),
					false)
$$;

COMMENT ON FUNCTION hx_worth_streaming(text, jsonb, timestamptz, text) IS
'True when the latency streaming saves (hx_batch_wait: until window_name opens, the window the task would otherwise get; NULL: the soonest window) is worth more (hx_latency_value per hour) than the extra unit cost of streaming at that moment; false when no latency value is known: what a rule with worth_streaming tests';

-- [storage]
INSERT INTO hx_rule (name, position, origin, max_sla, route, window_name, description) VALUES
	('user-initiated', 10, 'user', NULL, 'stream', NULL, 'Someone is waiting: run now'),
	('interactive-sla', 20, NULL, '5 seconds', 'stream', NULL, 'SLA under 5 seconds: run now'),
	('fast-batch', 30, NULL, '1 hour', 'batch', 'fast', 'SLA under 1 hour: next fast window'),
	('slow-batch', 1000, NULL, NULL, 'batch', 'nightly', 'Everything else: nightly off-peak window');
-- [/storage]
