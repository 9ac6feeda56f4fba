-- Write schedules whose stored version is still the one read (compare-and-set), each on
-- its own. KEYS[1]: the namespace's hash tag. ARGV: groups of five: id, the version read
-- (0: none was stored), the record (JSON), its version, its next tick (us, as text; ''
-- when it has none or is paused). Returns, per group, 1 when written and 0 when another
-- writer got there first.
local P = KEYS[1]
local out = {}
for i = 1, #ARGV, 5 do
  local id = ARGV[i]
  local current = tonumber(redis.call('HGET', P .. ':schv', id) or '0')
  if current ~= tonumber(ARGV[i + 1]) then
    out[#out + 1] = 0
  else
    redis.call('HSET', P .. ':sch', id, ARGV[i + 2])
    redis.call('HSET', P .. ':schv', id, ARGV[i + 3])
    if ARGV[i + 4] == '' then
      redis.call('ZREM', P .. ':sch:due', id)
    else
      redis.call('ZADD', P .. ':sch:due', ARGV[i + 4], id)
    end
    out[#out + 1] = 1
  end
end
return out
