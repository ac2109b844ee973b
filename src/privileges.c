/*-------------------------------------------------------------------------
 *
 * privileges.c
 *	  Who runs what.
 *
 *	  hybridexec's tables belong to the extension's owner, and no role is
 *	  granted more than reading some of them: the API functions check and
 *	  act.  Functions written in C run as their caller (GetUserId() is who
 *	  called), decide what the caller may do, and run their own statements
 *	  as the extension's owner (hx_become_owner), as a security-definer
 *	  function would.  Functions written in SQL that must know their caller
 *	  are split in two: the API function in the extension's schema is C
 *	  (hx_api), which notes the caller and calls the implementation of the
 *	  same name and arguments in schema _hybridexec, a SECURITY DEFINER
 *	  function that asks hx_caller() who called.  Internal functions are
 *	  executable by the owner only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "hybridexec.h"

/* the caller of the API function being run through hx_api, if any */
static Oid	api_caller = InvalidOid;

PG_FUNCTION_INFO_V1(hx_api);
PG_FUNCTION_INFO_V1(hx_caller);

static FmgrInfo *hx_api_target(FmgrInfo *flinfo);

/*
 * hx_become_owner
 *		Switches to the extension's owner for the statements that follow,
 *		the way a SECURITY DEFINER function does (SET ROLE is refused until
 *		hx_restore_user).  The rule cache must be loaded.  An error before
 *		hx_restore_user is harmless: aborting the (sub)transaction restores
 *		the user it started with.
 */
void
hx_become_owner(HxUserSave *save)
{
	GetUserIdAndSecContext(&save->userid, &save->sec_context);
	SetUserIdAndSecContext(hx_cached_owner(),
						   save->sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

/*
 * hx_restore_user
 *		Goes back to the user and security context hx_become_owner saved.
 */
void
hx_restore_user(const HxUserSave *save)
{
	SetUserIdAndSecContext(save->userid, save->sec_context);
}

/*
 * hx_seal
 *		Becomes role in a security-restricted operation (no SET ROLE, no
 *		temporary objects, no LISTEN) at a new settings level, with
 *		search_path set when one is given - as REFRESH MATERIALIZED VIEW
 *		runs a view's query - so that what runs until hx_unseal cannot
 *		leave anything in the session for whoever runs next: handlers, and
 *		the code of watched tables that runs as their owner.  An error
 *		meanwhile is undone by the abort of the (sub)transaction.
 */
void
hx_seal(HxSeal *seal, Oid role, const char *search_path)
{
	GetUserIdAndSecContext(&seal->userid, &seal->sec_context);
	seal->nest = NewGUCNestLevel();
	SetUserIdAndSecContext(role, seal->sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (search_path != NULL)
		(void) set_config_option("search_path", search_path, PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

/*
 * hx_unseal
 *		Goes back to the user hx_seal saved and undoes every setting
 *		changed since, SET and SET LOCAL alike.
 */
void
hx_unseal(const HxSeal *seal)
{
	SetUserIdAndSecContext(seal->userid, seal->sec_context);
	AtEOXact_GUC(false, seal->nest);
}

/*
 * hx_caller_sees
 *		Whether a role may see (and so wait for or cancel) a task submitted
 *		by submitted_by for department: an administrator, a member of the
 *		submitting role, or a member of the department
 *		(hx_department_member).  In a transaction with SPI connected, as
 *		the owner.
 */
bool
hx_caller_sees(Oid caller, Oid submitted_by, const char *department)
{
	static HxStmt sees = {
		"SELECT _hybridexec.hx_visible_to($1, $2, $3)",
		3, {OIDOID, OIDOID, TEXTOID}
	};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', department ? ' ' : 'n'};
	bool		isnull;
	Datum		d;

	values[0] = ObjectIdGetDatum(caller);
	values[1] = ObjectIdGetDatum(submitted_by);
	values[2] = department ? CStringGetTextDatum(department) : (Datum) 0;
	d = hx_stmt_value(&sees, values, nulls, &isnull);
	return !isnull && DatumGetBool(d);
}

/*
 * hx_task_invisible
 *		The error for a task that does not exist or that the caller may not
 *		see (hx_caller_sees): to the caller they are the same.  verb: what
 *		the caller wanted to do with it.
 */
void
hx_task_invisible(int64 id, const char *verb)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("task %lld does not exist", (long long) id),
			 errhint("Task ids are returned by hx_submit(); you can %s tasks you (or your department) submitted.",
					 verb)));
}

/*
 * hx_api
 *		SQL: the C face of an API function that must know its caller.  Runs
 *		the implementation of the same name and argument types in schema
 *		_hybridexec (a SECURITY DEFINER function, which switches to the
 *		owner itself) with hx_caller() telling it who called.  Arguments,
 *		null flags and the set-returning protocol are passed through as
 *		they are.
 */
Datum
hx_api(PG_FUNCTION_ARGS)
{
	FmgrInfo   *target = hx_api_target(fcinfo->flinfo);
	FunctionCallInfo inner = palloc(SizeForFunctionCallInfo(PG_NARGS()));
	Oid			outer = api_caller;
	Datum		result;
	int			i;

	InitFunctionCallInfoData(*inner, target, PG_NARGS(), PG_GET_COLLATION(),
							 fcinfo->context, fcinfo->resultinfo);
	for (i = 0; i < PG_NARGS(); i++)
		inner->args[i] = fcinfo->args[i];

	api_caller = GetUserId();
	PG_TRY();
	{
		result = FunctionCallInvoke(inner);
	}
	PG_FINALLY();
	{
		api_caller = outer;
	}
	PG_END_TRY();

	fcinfo->isnull = inner->isnull;
	return result;
}

/*
 * hx_api_target
 *		The implementation behind an hx_api function, looked up once per
 *		call site and kept in fn_extra.
 */
static FmgrInfo *
hx_api_target(FmgrInfo *flinfo)
{
	FmgrInfo   *target = flinfo->fn_extra;
	HeapTuple	tup;
	Form_pg_proc proc;
	Oid			impl;

	if (target != NULL)
		return target;

	/* by the catalog, not by name lookup: the caller may not use the schema */
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(flinfo->fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", flinfo->fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	impl = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid,
						   NameGetDatum(&proc->proname),
						   PointerGetDatum(&proc->proargtypes),
						   ObjectIdGetDatum(get_namespace_oid(HX_INTERNAL_SCHEMA, false)));
	if (!OidIsValid(impl))
		elog(ERROR, "hybridexec function %s has no implementation in schema %s",
			 NameStr(proc->proname), HX_INTERNAL_SCHEMA);
	ReleaseSysCache(tup);

	target = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(FmgrInfo));
	fmgr_info_cxt(impl, target, flinfo->fn_mcxt);
	flinfo->fn_extra = target;
	return target;
}

/*
 * hx_caller
 *		SQL (_hybridexec.hx_caller()): the role that called the API function
 *		being run through hx_api, or the current user outside one.
 */
Datum
hx_caller(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(OidIsValid(api_caller) ? api_caller : GetUserId());
}
