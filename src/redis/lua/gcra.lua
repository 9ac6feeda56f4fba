-- GCRA on the server's clock. KEYS[1]: the limit's key (its theoretical arrival time, us).
-- ARGV: emission interval T (us), burst B, cost n.
-- Returns {allowed (1/0), remaining, retry after (us)}.
local T, B, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + n * T
local allow_at = new_tat - B * T
if allow_at > now then
  return {0, 0, string.format('%.0f', allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / T), 0}
