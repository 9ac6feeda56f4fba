-- ARGV: mode, worker, lease (us), events kept, sweep limit, dead retention (us), then
--   mode 'ids': the job ids to claim;
--   mode 'due': most jobs, then the queues to take from. Takes running jobs whose lease
--   expired first, then queued jobs that are due: highest priority first, then earliest
--   run_at, then oldest.
-- Returns {claims, next}: claims flat, four values per job: 'claimed', id, d, m |
-- 'notdue', id, run_at, false | 'exhausted', id, reason, false | 'skipped', id, state or
-- false, false ('due' answers only the first and third); next: when nothing was claimed in mode 'due', the earliest time (us, as
-- text) something comes due, or false; then Redis's clock (us, as text).
local mode, worker = ARGV[1], ARGV[2]
local lease, keep = tonumber(ARGV[3]), tonumber(ARGV[4])
local sweep_limit, dead_keep = tonumber(ARGV[5]), tonumber(ARGV[6])
local due = mode == 'due'
local ids = {}
local source = {} -- mode 'due': the key each id was taken from
local touched = {} -- lanes taken from, checked for emptiness at the end
if not due then
  for i = 7, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  local max = tonumber(ARGV[7])
  local queues = {}
  for i = 8, #ARGV do queues[#queues + 1] = ARGV[i] end
  for _, q in ipairs(queues) do
    if #ids >= max then break end
    local rk = run_key(q)
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', rk, '-inf', SNOW, 'LIMIT', 0, max - #ids)) do
      ids[#ids + 1] = id
      source[id] = rk
    end
  end
  -- Lanes of every queue, highest priority first; lanes of one priority are merged by
  -- run_at, then id.
  local lanes = {}
  for qi, q in ipairs(queues) do
    local l = redis.call('ZRANGE', P .. ':l:' .. q, 0, -1)
    for _, pr in ipairs(l) do
      lanes[#lanes + 1] = {pr = tonumber(pr), qi = qi, q = q, key = lane_key(q, tonumber(pr))}
    end
  end
  table.sort(lanes, function(a, b)
    if a.pr ~= b.pr then return a.pr > b.pr end
    return a.qi < b.qi
  end)
  local i = 1
  while i <= #lanes and #ids < max do
    local j = i
    while j < #lanes and lanes[j + 1].pr == lanes[i].pr do j = j + 1 end
    local need = max - #ids
    if i == j then
      local key = lanes[i].key
      local got = redis.call('ZRANGEBYSCORE', key, '-inf', SNOW, 'LIMIT', 0, need)
      for _, id in ipairs(got) do
        ids[#ids + 1] = id
        source[id] = key
      end
      touched[key] = lanes[i]
    else
      local cand = {}
      for k = i, j do
        local key = lanes[k].key
        local got = redis.call('ZRANGEBYSCORE', key, '-inf', SNOW, 'WITHSCORES', 'LIMIT', 0, need)
        for n = 1, #got, 2 do
          cand[#cand + 1] = {id = got[n], s = tonumber(got[n + 1]), key = key}
        end
        touched[key] = lanes[k]
      end
      table.sort(cand, function(a, b)
        if a.s ~= b.s then return a.s < b.s end
        return a.id < b.id
      end)
      for n = 1, math.min(need, #cand) do
        ids[#ids + 1] = cand[n].id
        source[cand[n].id] = cand[n].key
      end
    end
    i = j + 1
  end
end

local out = {}
local function answer(a, b, c, d)
  local n = #out
  out[n + 1] = a
  out[n + 2] = b
  out[n + 3] = c
  out[n + 4] = d
end
local ms = hmget(P .. ':m', ids)
local ds = hmget(P .. ':d', ids)
local cur = {}
local dead_until = nil
local running_score = fmt(NOW + lease)
for j, id in ipairs(ids) do
  local m = cur[id] or ms[j]
  if not m then
    if due then zrem(source[id], id) else answer('skipped', id, false, false) end
  else
    local t = unm(m)
    local from = t.s
    local reason, exhausted, go = nil, false, false
    if from == QUEUED then
      if t.r > NOW then
        if due then
          -- Filed with a score that says due: file it again by its run_at.
          zadd(source[id], fmt(t.r), id)
        else
          answer('notdue', id, fmt(t.r), false)
        end
      else
        go = true
      end
    elseif from == RUNNING and has(t.fl, F_LEASE) and t.x <= NOW then
      local owner = t.o
      if owner == '' then owner = 'unknown' end
      exhausted = t.a >= t.ma
      if exhausted then
        reason = 'worker_lost: lease of ' .. owner .. ' expired during attempt ' .. t.a .. ' of ' .. t.ma .. '; no attempts left'
      else
        reason = 'lease of ' .. owner .. ' expired during attempt ' .. t.a .. '; taken over'
      end
      go = true
    elseif due then
      -- Stale entry (the job moved on): drop it, or refile a live lease by its expiry.
      if from == RUNNING and has(t.fl, F_LEASE) and source[id] == run_key(t.q) then
        zadd(source[id], fmt(t.x), id)
      else
        zrem(source[id], id)
      end
    else
      answer('skipped', id, NAME[from], false)
    end
    if go then
      t.v = t.v + 1
      t.u = NOW
      if from == QUEUED then unfile(t, id) end
      if exhausted then
        push_event(t, from, DEAD, worker, reason, keep)
        t.s = DEAD; t.f = NOW; t.o = ''; t.x = 0
        t.fl = bor(band(t.fl, bnot(F_LEASE)), F_FINISHED + F_LE)
        t.le = reason
        local nm = mk(t)
        put_m(id, nm)
        cur[id] = nm
        zrem(run_key(t.q), id)
        tally(from, t.k, -1)
        tally(DEAD, t.k, 1)
        finished(t, id, dead_keep)
        answer('exhausted', id, reason, false)
      else
        t.a = t.a + 1
        push_event(t, from, RUNNING, worker, reason, keep)
        t.s = RUNNING; t.o = worker; t.x = NOW + lease; t.st = NOW
        t.fl = bor(t.fl, F_STARTED + F_LEASE)
        local nm = mk(t)
        put_m(id, nm)
        cur[id] = nm
        zadd(run_key(t.q), running_score, id)
        if from ~= RUNNING then
          tally(from, t.k, -1)
          tally(RUNNING, t.k, 1)
        end
        answer('claimed', id, ds[j], nm)
      end
    end
  end
end
flush()
for key, lane in pairs(touched) do
  if redis.call('ZCARD', key) == 0 then
    redis.call('ZREM', P .. ':l:' .. lane.q, lane.pr)
  end
end
local next_due = false
if due and #out == 0 then
  local best = nil
  for i = 8, #ARGV do
    local q = ARGV[i]
    local h = redis.call('ZRANGE', run_key(q), 0, 0, 'WITHSCORES')
    if h[2] and (not best or tonumber(h[2]) < best) then best = tonumber(h[2]) end
    for _, pr in ipairs(redis.call('ZRANGE', P .. ':l:' .. q, 0, -1)) do
      h = redis.call('ZRANGE', lane_key(q, tonumber(pr)), 0, 0, 'WITHSCORES')
      if h[2] and (not best or tonumber(h[2]) < best) then best = tonumber(h[2]) end
    end
  end
  if best then next_due = fmt(best) end
end
sweep(sweep_limit)
return {out, next_due, SNOW}
