-- ARGV: worker, lease (us), events kept, sweep limit, dead retention (us), then job ids.
-- Returns per id: {'claimed', id, d, k, m, res, le} | {'notdue', id, run_at}
--               | {'exhausted', id, reason} | {'skipped', id, state or false}
local worker, lease, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local sweep_limit, dead_keep = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_us()
local snow = fmt(now)
local out = {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'd', 'k', 'm', 'ik', 'res', 'le')
  local m = h[3]
  if not m then
    out[#out + 1] = {'skipped', id, false}
  else
    local t = unm(m)
    local from = t.s
    local reason, exhausted, go = nil, false, false
    if from == 'queued' then
      if t.r > now then
        out[#out + 1] = {'notdue', id, t.r}
      else
        go = true
      end
    elseif from == 'running' and t.x and t.x <= now then
      local owner = t.o
      if owner == '' then owner = 'unknown' end
      exhausted = t.a >= t.ma
      if exhausted then
        reason = 'worker_lost: lease of ' .. owner .. ' expired during attempt ' .. t.a .. ' of ' .. t.ma .. '; no attempts left'
      else
        reason = 'lease of ' .. owner .. ' expired during attempt ' .. t.a .. '; taken over'
      end
      go = true
    else
      out[#out + 1] = {'skipped', id, from}
    end
    if go then
      local w = {'HSET', key}
      t.v = t.v + 1
      t.u = now
      local kind = h[2]
      if exhausted then
        local dropped = push_event(w, t, snow, from, 'dead', t.a, worker, reason, keep)
        t.s = 'dead'; t.f = now; t.o = ''; t.x = nil
        w[#w + 1] = 'le'; w[#w + 1] = reason
        w[#w + 1] = 'm'; w[#w + 1] = mk(t)
        redis.call(unpack(w))
        if dropped then redis.call('HDEL', key, dropped) end
        move(id, from, 'dead')
        tally(from, kind, -1)
        tally('dead', kind, 1)
        finished(id, key, kind, h[4], 'dead', now, dead_keep)
        out[#out + 1] = {'exhausted', id, reason}
      else
        t.a = t.a + 1
        local dropped = push_event(w, t, snow, from, 'running', t.a, worker, reason, keep)
        t.s = 'running'; t.o = worker; t.x = now + lease; t.st = now
        local nm = mk(t)
        w[#w + 1] = 'm'; w[#w + 1] = nm
        redis.call(unpack(w))
        if dropped then redis.call('HDEL', key, dropped) end
        if from ~= 'running' then
          move(id, from, 'running')
          tally(from, kind, -1)
          tally('running', kind, 1)
        end
        out[#out + 1] = {'claimed', id, h[1], kind, nm, h[5], h[6]}
      end
    end
  end
end
flush_moves()
flush_tallies()
flush_done()
sweep(now, sweep_limit)
return out
