-- ARGV: lease (us), then pairs: job id, claim token. Returns per pair: 'held', 'cancel' or
-- 'lost' (the claim no longer holds the job).
local lease = tonumber(ARGV[1])
local ids, tokens = {}, {}
for i = 2, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  tokens[#tokens + 1] = tonumber(ARGV[i + 1])
end
local ms = hmget(P .. ':m', ids)
local score = fmt(NOW + lease)
local out = {}
local queues = {}
for j, id in ipairs(ids) do
  local m = ms[j]
  local t = m and unm(m)
  if t and t.s == RUNNING and t.ct == tokens[j] then
    t.x = NOW + lease
    put_m(id, mk(t))
    leased(t.q, id)
    queues[t.q] = true
    if has(t.fl, F_CANCEL) then out[#out + 1] = 'cancel' else out[#out + 1] = 'held' end
  else
    out[#out + 1] = 'lost'
  end
end
flush()
-- The batches this call's leases replace expire now or soon; drop the expired ones of these
-- queues, so a pool whose slots stay busy (no claims, no finishes) keeps a bounded number.
local later = fmt(NOW + 1000000)
for q in pairs(queues) do reap(q, 0, 8, later) end
flush_leases(score)
return out
