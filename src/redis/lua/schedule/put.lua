-- Write a schedule if its version is still the one read (compare-and-set).
-- KEYS[1]: the namespace's hash tag. ARGV: id, the version read (0: none was stored), the
-- record (JSON), its version, its next tick (us, as text; '' when it has none or is
-- paused). Returns 1 when written, 0 when another writer got there first.
local P = KEYS[1]
local id = ARGV[1]
local current = tonumber(redis.call('HGET', P .. ':schv', id) or '0')
if current ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', P .. ':sch', id, ARGV[3])
redis.call('HSET', P .. ':schv', id, ARGV[4])
if ARGV[5] == '' then
  redis.call('ZREM', P .. ':sch:due', id)
else
  redis.call('ZADD', P .. ':sch:due', ARGV[5], id)
end
return 1
