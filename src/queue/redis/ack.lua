-- Done. ARGV: groups of 4: id, priority, entry id, token. Deliveries no longer held are
-- ignored. Returns the number removed.
local ids = {}
local h = held(1, 4)
for _, x in ipairs(h) do
  remove_entry(x[3], x[4])
  ids[#ids + 1] = x[2]
  count('n', x[7], -1)
  count('f', x[7], -1)
end
chunked({'HDEL', M}, ids)
chunked({'ZREM', LX}, ids)
flush_removals()
flush_counts()
return #h
