-- Give back. ARGV: groups of 8: the 6 of `held`, then run_at (us), attempt.
-- Returns the number given back.
local now = now_us()
local h = held(1, 8)
local writes = {}
local delayed = {}
local ids = {}
for _, x in ipairs(h) do
  local id, pri, kind, b = x[2], x[3], x[6], x[7]
  ids[#ids + 1] = id
  local rat, att = ARGV[b + 6], ARGV[b + 7]
  remove_entry(pri, x[4])
  count('n', kind, -1)
  count('f', kind, -1)
  local eid = ''
  if tonumber(rat) <= now then
    eid = add_ready(id, pri)
    count('n', kind, 1)
  else
    delayed[#delayed + 1] = rat
    delayed[#delayed + 1] = id
    count('d', kind, 1)
  end
  writes[#writes + 1] = id
  writes[#writes + 1] = meta(eid, '0', pri, att, rat, kind)
end
flush_removals()
chunked({'ZREM', LX}, ids)
chunked({'HSET', M}, writes)
chunked({'ZADD', D}, delayed)
flush_counts()
return #h
