-- ARGV: claim name, worker, lease (us), events kept, retention (us), dead retention (us),
-- sweep limit, reason, then the queues the claim took from.
-- Hands back what the claim of that name took and still holds (its answer never reached its
-- caller), each job due now, its attempt not spent. The claim filed its leases as batches
-- `<name>@<queue>`, scored with their expiry; a job is still that claim's while it runs for
-- the same worker with the start the claim gave it (the batch's expiry less the lease).
-- Returns how many went back.
local name, worker, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local keep, retention, dead_keep = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local sweep_limit, reason = tonumber(ARGV[7]), ARGV[8]
local back = 0
for i = 9, #ARGV do
  local q = ARGV[i]
  local b = name .. '@' .. q
  local score = redis.call('ZSCORE', run_key(q), b)
  local list = score and redis.call('HGET', P .. ':rb', b)
  if list then
    local started = tonumber(score) - lease
    local ids = {}
    for k = 1, #list, 36 do ids[#ids + 1] = string.sub(list, k, k + 35) end
    local ms = hmget(P .. ':m', ids)
    for j, id in ipairs(ids) do
      local m = ms[j]
      local t = m and unm(m)
      if t and t.s == RUNNING and t.o == worker and t.st == started then
        local to = settle_held(t, id, 'release', '', reason, worker, keep, retention, dead_keep)
        if to == QUEUED then back = back + 1 end
      end
    end
    redis.call('ZREM', run_key(q), b)
    redis.call('HDEL', P .. ':rb', b)
  end
end
settled(back, sweep_limit)
return back
