-- Placeholder for issue 11's migration 002, so that 003 loads on the
-- branch that wrote it (tern refuses a gap). Replaced on merge.
SELECT 1;

---- create above / drop below ----

SELECT 1;
