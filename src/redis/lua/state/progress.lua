-- ARGV: id, claim token, the report (JSON). Keeps the report while that claim still holds
-- the job (running, its token the latest claim's), as a heartbeat is fenced. Returns 1 when
-- kept, 0 when the claim no longer holds the job.
local id, token = ARGV[1], tonumber(ARGV[2])
local m = redis.call('HGET', P .. ':m', id)
if not m then return 0 end
local t = unm(m)
if t.s ~= RUNNING or t.ct ~= token then return 0 end
redis.call('HSET', P .. ':prog', id, ARGV[3])
return 1
