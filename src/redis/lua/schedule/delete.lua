-- Remove a schedule. KEYS[1]: the namespace's hash tag; ARGV[1]: the id. Returns 1 if
-- there was one.
local P = KEYS[1]
local id = ARGV[1]
redis.call('ZREM', P .. ':sch:due', id)
redis.call('HDEL', P .. ':schv', id)
return redis.call('HDEL', P .. ':sch', id)
