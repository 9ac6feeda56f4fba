-- For the reconciler. ARGV: job ids. Returns 1/0 per id: whether the queue holds the job
-- (ready, delayed or leased). Metadata whose stream entry or delayed slot is gone (lost in a
-- restart, trimmed by hand) is repaired away, so the job can be enqueued again.
local metas = hmget(M, ARGV)
local out = {}
local stale = {}
for i, id in ipairs(ARGV) do
  out[i] = 0
  local m = metas[i]
  if m then
    local eid, tok, pri, att, rat, kind = parse(m)
    local there
    if eid == '' then
      there = redis.call('ZSCORE', D, id)
    else
      there = #redis.call('XRANGE', lane_key(pri), eid, eid) > 0
    end
    if there then
      out[i] = 1
    else
      stale[#stale + 1] = id
      if eid == '' then count('d', kind, -1) else count('n', kind, -1) end
      if eid ~= '' and tok ~= '0' then count('f', kind, -1) end
    end
  end
end
chunked({'HDEL', M}, stale)
chunked({'ZREM', LX}, stale)
flush_counts()
return out
