-- ARGV: groups of 11: id, idempotency key (''), kind, queue, priority, delay (us), d, m (as
-- create.lua's), workflow id, the ids of the steps after it (36 bytes each, or ''), and for
-- a step that waits, its countdown (see P:wf:s in common.lua; '' for one that does not).
-- Stores a workflow's steps, all of them or none: a taken id fails the call before anything
-- is written. Steps that wait are `pending` (m says so); the others are queued as create.lua
-- queues jobs. Returns how many steps it stored.
local ids = {}
for i = 1, #ARGV, 11 do ids[#ids + 1] = ARGV[i] end
local have = hmget(P .. ':m', ids)
local seen = {}
for j, id in ipairs(ids) do
  if have[j] or seen[id] then
    return redis.error_reply('job id ' .. id .. ' is taken; no step of the workflow was stored')
  end
  seen[id] = true
end
local dflat, n_d = {}, 0
local filed = 0
local kinds = {}
for j, id in ipairs(ids) do
  local i = (j - 1) * 11 + 1
  local kind, q, pr = ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
  local m, wf, deps, waiting = ARGV[i + 7], ARGV[i + 8], ARGV[i + 9], ARGV[i + 10]
  dflat[n_d + 1] = id
  dflat[n_d + 2] = ARGV[i + 6]
  n_d = n_d + 2
  zadd(kind_key(kind), '0', id)
  zadd(P .. ':i:wf:' .. wf, '0', id)
  kinds[kind] = true
  if deps ~= '' then redis.call('HSET', P .. ':wf:dep', id, deps) end
  if waiting ~= '' then
    redis.call('HSET', P .. ':wf:s', id, waiting)
    -- (its run_at is set when it becomes ready)
    put_m(id, string.sub(m, 1, 18) .. struct.pack('<dd', NOW, NOW) .. string.sub(m, 35))
    tally(PENDING, kind, 1)
  else
    local t = T
    t.q, t.pr, t.k, t.fl = q, pr, kind, 0
    queue_new(t, id, m, tonumber(ARGV[i + 5]))
    filed = filed + 1
  end
end
store_created(dflat, kinds, filed)
return #ids
