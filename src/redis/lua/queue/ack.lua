-- Done. ARGV: groups of 6 (see `held`). Deliveries no longer held are ignored.
-- Returns the number removed.
local ids = {}
local h = held(1, 6)
for _, x in ipairs(h) do
  remove_entry(x[3], x[4])
  ids[#ids + 1] = x[2]
  count('n', x[6], -1)
  count('f', x[6], -1)
end
chunked({'HDEL', M}, ids)
chunked({'ZREM', LX}, ids)
flush_removals()
flush_counts()
return #h
