/*
 * src/sql/update/0.3--0.4.sql
 *
 * Storage migration from 0.3 to 0.4, run between begin.sql (which dropped
 * the 0.3 code) and the 0.4 code.
 */
