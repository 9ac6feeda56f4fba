-- ARGV: most lane entries read (a budget over all lanes), most due jobs moved per queue.
-- Queued jobs per queue: waiting jobs that came due first join their lanes (as a claim
-- would move them), then each lane's entries are read and those still queued counted (a
-- job cancelled while due leaves its entry for the next claim to pass over). A lane past
-- the budget, or due jobs left unmoved, make the queue's counts lower bounds.
-- Returns per queue, by name: {queue, delayed, at least (0|1), priority, ready, ...}.
local budget, moved = tonumber(ARGV[1]), tonumber(ARGV[2])
local queues = redis.call('SMEMBERS', P .. ':queues')
table.sort(queues)
local out = {}
for _, q in ipairs(queues) do
  promote(q, moved)
  local wk = wait_key(q)
  local at_least = 0
  if redis.call('ZCOUNT', wk, '-inf', SNOW) > 0 then at_least = 1 end
  local row = {q, redis.call('ZCOUNT', wk, '(' .. SNOW, '+inf'), 0}
  -- (members are priorities, scored by -priority: highest first)
  for _, pr in ipairs(redis.call('ZRANGE', P .. ':l:' .. q, 0, -1)) do
    local key = lane_key(q, tonumber(pr))
    local n = redis.call('LLEN', key)
    local ready = n
    if n > budget then
      at_least = 1
    elseif n > 0 then
      budget = budget - n
      local ms = hmget(P .. ':m', redis.call('LRANGE', key, 0, -1))
      ready = 0
      for j = 1, n do
        if ms[j] and string.byte(ms[j], 1) == QUEUED then ready = ready + 1 end
      end
    end
    if ready > 0 then
      row[#row + 1] = tonumber(pr)
      row[#row + 1] = ready
    end
  end
  row[3] = at_least
  out[#out + 1] = row
end
return out
