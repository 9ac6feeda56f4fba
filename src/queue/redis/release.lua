-- Give back. ARGV: groups of 6: id, priority, entry id, token, run_at (us), attempt.
-- Returns the number given back.
local now = now_us()
local h = held(1, 6)
local writes = {}
local delayed = {}
local ids = {}
for _, x in ipairs(h) do
  ids[#ids + 1] = x[2]
  local id, pri, kind, b = x[2], x[3], x[7], x[8]
  local rat, att = ARGV[b + 4], ARGV[b + 5]
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
