-- Drop the deliveries of jobs that will never run (cancelled while they waited), unless a
-- worker holds them: a held delivery is settled by its holder. ARGV: job ids.
-- Returns the number dropped.
local metas = hmget(M, ARGV)
local gone = {}
local waiting = {}
for i, id in ipairs(ARGV) do
  local m = metas[i]
  if m then
    local eid, tok, pri, _, _, kind = parse(m)
    -- The token is 0 until the entry is delivered, and again once it is given back.
    if tok == '0' then
      if eid == '' then
        waiting[#waiting + 1] = id
        count('d', kind, -1)
      else
        remove_entry(pri, eid)
        count('n', kind, -1)
      end
      gone[#gone + 1] = id
    end
  end
end
chunked({'ZREM', D}, waiting)
chunked({'HDEL', M}, gone)
flush_removals()
flush_counts()
return #gone
