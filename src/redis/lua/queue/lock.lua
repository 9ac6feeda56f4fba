-- A named lock with a time to live. KEYS[1]: the lock; ARGV: holder, ttl (ms).
-- Takes it when free, renews it when `holder` has it. Returns 1 when held by `holder`.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
