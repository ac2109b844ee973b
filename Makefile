# Makefile for hybridexec (PGXS).
#
#   make                      build the extension
#   make install              install it (and the hx_worker command) into the
#                             server of PG_CONFIG
#   make installcheck         pg_regress, isolation and TAP tests, each on a
#                             temporary instance with the library preloaded
#   make bench                benchmarks (figures only, never pass/fail)
#
# Run the tests as an ordinary user (initdb refuses root); scripts/test.sh
# does that, and installs what is missing, for you.

EXTENSION = hybridexec
MODULE_big = hybridexec
OBJS = \
	src/hybridexec.o \
	src/shmem.o \
	src/wakeup.o \
	src/finished.o \
	src/rules.o \
	src/classify.o \
	src/submit.o \
	src/task_state.o \
	src/history.o \
	src/task_exec.o \
	src/worker_common.o \
	src/stream_worker.o \
	src/cron.o \
	src/batch_launch.o \
	src/batch_worker.o \
	src/scheduler.o \
	src/launcher.o \
	src/cost.o \
	src/book.o \
	src/stmt.o \
	src/privileges.o \
	src/alert.o \
	src/attach.o \
	src/drop.o

# The install script is built from one file per concern, in this order.
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" hybridexec.control)
SQL_PARTS = \
	src/sql/internal.sql \
	src/sql/queue.sql \
	src/sql/cron.sql \
	src/sql/windows.sql \
	src/sql/schedules.sql \
	src/sql/prices.sql \
	src/sql/rules.sql \
	src/sql/batch.sql \
	src/sql/ledger.sql \
	src/sql/quality.sql \
	src/sql/reports.sql \
	src/sql/precompute.sql \
	src/sql/replay.sql \
	src/sql/executors.sql \
	src/sql/attach.sql \
	src/sql/restore.sql \
	src/sql/maintenance.sql \
	src/sql/policy.sql \
	src/sql/privileges.sql
# Scripts of released versions, kept as they shipped, and the updates
# from each to the next: hybridexec--<from>--<to>.sql is the update's own
# migration (src/sql/update/<from>--<to>.sql, between the generic steps
# that drop and re-create the extension's code) followed by every part's
# code, i.e. the parts without their [storage] blocks (tables, indexes,
# shipped rows), which the migration brings up to date instead.  A block
# marked [storage <version>] holds storage new in that version: the
# update to it creates it as a fresh install does, later ones skip it.
RELEASED = 0.2 0.3
RELEASED_UPDATES = 0.2--0.3
UPDATES = 0.3--$(EXTVERSION)
DATA = $(foreach v,$(RELEASED) $(RELEASED_UPDATES),src/sql/released/hybridexec--$(v).sql)
DATA_built = hybridexec--$(EXTVERSION).sql $(foreach u,$(UPDATES),hybridexec--$(u).sql)
PGFILEDESC = "hybridexec - hybrid stream/batch execution of AI tasks"

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src -DHX_VERSION='"$(EXTVERSION)"'
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers

REGRESS = setup register classify rules submit windows cost bad_input executor attach privileges
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=$(srcdir)/test/regress.conf \
	--load-extension=hybridexec

ISOLATION = claim_skip_locked rollback_never_runs executor_lease
ISOLATION_OPTS = --temp-instance=tmp_check_iso --temp-config=$(srcdir)/test/isolation.conf \
	--load-extension=hybridexec --inputdir=$(srcdir)/test --outputdir=test

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: rebuild everything when a header
# changes, or objects compiled against different struct layouts get mixed.
$(OBJS): $(wildcard $(srcdir)/src/*.h) $(srcdir)/hybridexec.control

hybridexec--$(EXTVERSION).sql: $(addprefix $(srcdir)/,$(SQL_PARTS))
	cat $^ > $@

hybridexec--%--$(EXTVERSION).sql: $(srcdir)/src/sql/update/begin.sql $(srcdir)/src/sql/update/%--$(EXTVERSION).sql \
		$(addprefix $(srcdir)/,$(SQL_PARTS)) $(srcdir)/src/sql/update/end.sql
	{ cat $(srcdir)/src/sql/update/begin.sql $(srcdir)/src/sql/update/$*--$(EXTVERSION).sql; \
	  awk -v new='$(EXTVERSION)' '/^-- \[storage\]$$/ { skip = 1; next } \
		/^-- \[storage [0-9.]+\]$$/ { skip = ($$3 != new "]"); next } \
		/^-- \[\/storage\]$$/ { skip = 0; next } !skip' \
		$(addprefix $(srcdir)/,$(SQL_PARTS)); \
	  cat $(srcdir)/src/sql/update/end.sql; } > $@

# hx_worker, the external executor (a libpq client): its own Makefile,
# installed into PostgreSQL's bindir with the extension, with a symbolic
# link in /usr/local/bin so that it runs by name (see
# tools/hx_worker/Makefile).
.PHONY: hx-worker install-hx-worker uninstall-hx-worker clean-hx-worker
all: hx-worker
install: install-hx-worker
uninstall: uninstall-hx-worker
clean: clean-hx-worker
hx-worker:
	$(MAKE) -C $(srcdir)/tools/hx_worker PG_CONFIG=$(PG_CONFIG)
install-hx-worker: hx-worker
	$(MAKE) -C $(srcdir)/tools/hx_worker PG_CONFIG=$(PG_CONFIG) install
uninstall-hx-worker:
	$(MAKE) -C $(srcdir)/tools/hx_worker PG_CONFIG=$(PG_CONFIG) uninstall
clean-hx-worker:
	$(MAKE) -C $(srcdir)/tools/hx_worker clean

# hybridexec_proxy, the PL/Proxy front of a cluster of hybridexec servers:
# a second extension with its own Makefile (proxy/Makefile), installed
# with this one.
.PHONY: install-proxy uninstall-proxy
install: install-proxy
uninstall: uninstall-proxy
install-proxy:
	$(MAKE) -C $(srcdir)/proxy PG_CONFIG=$(PG_CONFIG) install
uninstall-proxy:
	$(MAKE) -C $(srcdir)/proxy PG_CONFIG=$(PG_CONFIG) uninstall

.PHONY: bench
bench:
	bash $(srcdir)/test/bench/run.sh
