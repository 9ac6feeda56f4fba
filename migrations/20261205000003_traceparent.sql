-- jobforge: the W3C trace context a job was submitted in (issue 18), so each attempt's span
-- joins the trace of the request that made it. Written once, at create; NULL for a job
-- submitted outside a trace. (A nullable column without a default: no table rewrite.)
ALTER TABLE jobs ADD COLUMN traceparent text;
