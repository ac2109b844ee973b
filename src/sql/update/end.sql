/*
 * src/sql/update/end.sql
 *
 * Last step of every update script: puts back what hangs off objects that
 * are not the extension's and went with the old code - the trigger of
 * each watched table, the write-back trigger - and brings the pg_cron jobs
 * of the windows in line with the new code.
 */

SELECT _hybridexec.hx_attach_trigger(a.source) FROM hx_attachment a;
SELECT _hybridexec.hx_attach_sync_write_back();
SELECT hx_sync_cron() WHERE _hybridexec.hx_cron_available();
