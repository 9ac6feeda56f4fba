-- ARGV: worker, lease (us), events kept, sweep limit, dead retention (us), then job ids.
-- Returns per id: {'claimed', record...} | {'notdue', id, run_at} | {'exhausted', id, reason}
--               | {'skipped', id, state or false}
local worker, lease, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local sweep_limit, dead_keep = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_us()
local out = {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local key = job_key(id)
  local h = hget_record(key)
  local s = h[F.s]
  local reason, exhausted, from = nil, false, s
  local go = false
  if not s then
    out[#out + 1] = {'skipped', id, false}
  elseif s == 'queued' then
    if tonumber(h[F.r]) > now then
      out[#out + 1] = {'notdue', id, h[F.r]}
    else
      go = true
    end
  elseif s == 'running' and h[F.x] and tonumber(h[F.x]) <= now then
    local owner = h[F.o] or 'unknown'
    local a, ma = tonumber(h[F.a]), tonumber(h[F.ma])
    exhausted = a >= ma
    if exhausted then
      reason = 'worker_lost: lease of ' .. owner .. ' expired during attempt ' .. a .. ' of ' .. ma .. '; no attempts left'
    else
      reason = 'lease of ' .. owner .. ' expired during attempt ' .. a .. '; taken over'
    end
    go = true
  else
    out[#out + 1] = {'skipped', id, s}
  end
  if go then
    local w = {'HSET', key}
    local v = tonumber(h[F.v]) + 1
    w[#w + 1] = 'v'; w[#w + 1] = tostring(v)
    w[#w + 1] = 'u'; w[#w + 1] = fmt(now)
    if exhausted then
      local dropped = push_event(w, h, now, from, 'dead', h[F.a], worker, reason, keep)
      w[#w + 1] = 's'; w[#w + 1] = 'dead'
      w[#w + 1] = 'f'; w[#w + 1] = fmt(now)
      w[#w + 1] = 'le'; w[#w + 1] = reason
      redis.call(unpack(w))
      redis.call('HDEL', key, 'o', 'x', dropped or 'o')
      move(id, from, 'dead')
      tally(from, h[F.k], -1)
      tally('dead', h[F.k], 1)
      finished(id, key, h, 'dead', now, dead_keep)
      out[#out + 1] = {'exhausted', id, reason}
    else
      local attempt = tonumber(h[F.a]) + 1
      local dropped = push_event(w, h, now, from, 'running', attempt, worker, reason, keep)
      w[#w + 1] = 's'; w[#w + 1] = 'running'
      w[#w + 1] = 'a'; w[#w + 1] = tostring(attempt)
      w[#w + 1] = 'o'; w[#w + 1] = worker
      w[#w + 1] = 'x'; w[#w + 1] = fmt(now + lease)
      w[#w + 1] = 'st'; w[#w + 1] = fmt(now)
      redis.call(unpack(w))
      if dropped then redis.call('HDEL', key, dropped) end
      if from ~= 'running' then
        move(id, from, 'running')
        tally(from, h[F.k], -1)
        tally('running', h[F.k], 1)
      end
      h[F.s] = 'running'; h[F.a] = tostring(attempt); h[F.o] = worker
      h[F.x] = fmt(now + lease); h[F.st] = fmt(now); h[F.u] = fmt(now); h[F.v] = tostring(v)
      local r = record(id, h)
      table.insert(r, 1, 'claimed')
      out[#out + 1] = r
    end
  end
end
flush_moves()
flush_tallies()
flush_done()
sweep(now, sweep_limit)
return out
