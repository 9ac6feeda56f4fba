-- Dead-letter. ARGV: capacity, then groups of 7: the 6 of `held`, then the reason.
-- Keeps at most `capacity` dead letters (oldest dropped, counters kept exact).
local cap = tonumber(ARGV[1])
local now = now_us()
local h = held(2, 7)
local ids = {}
local dead = P .. ':dead'
for _, x in ipairs(h) do
  local id, kind, b = x[2], x[6], x[7]
  remove_entry(x[3], x[4])
  ids[#ids + 1] = id
  count('n', kind, -1)
  count('f', kind, -1)
  count('x', kind, 1)
  redis.call('XADD', dead, '*', 'j', id, 'k', kind, 'a', x[5], 'r', ARGV[b + 6], 't', fmt(now))
end
chunked({'HDEL', M}, ids)
chunked({'ZREM', LX}, ids)
flush_removals()
local over = redis.call('XLEN', dead) - cap
if over > 0 then
  local old = redis.call('XRANGE', dead, '-', '+', 'COUNT', math.min(over, 10000))
  local drop = {}
  for _, e in ipairs(old) do
    drop[#drop + 1] = e[1]
    local f = e[2]
    for k = 1, #f, 2 do
      if f[k] == 'k' then count('x', f[k + 1], -1) end
    end
  end
  chunked({'XDEL', dead}, drop)
end
flush_counts()
return #h
