-- ARGV: groups of 5: id, priority, attempt, run_at (us), kind. Ids already held are skipped.
-- Returns the number added.
local now = now_us()
local ids = {}
for i = 1, #ARGV, 5 do ids[#ids + 1] = ARGV[i] end
local present = hmget(M, ids)
local seen = {}
local writes = {}
local delayed = {}
local added = 0
for k = 1, #ids do
  local b = (k - 1) * 5
  local id, pri, att, rat, kind = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  if not present[k] and not seen[id] then
    seen[id] = true
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
    added = added + 1
  end
end
chunked({'HSET', M}, writes)
chunked({'ZADD', D}, delayed)
flush_counts()
return added
