-- ARGV: events kept, retention (us), dead retention (us), sweep limit, then groups of 6:
-- id, worker, attempt, code (ok|retry|defer|dead|cancel|release), run_at (us or ''), text.
-- Returns per transition {'applied', state, version} or {'conflict', state or false, reason}.
local keep, retention, dead_keep, sweep_limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_us()
local snow = fmt(now)
local out = {}
local TARGET = {ok = 'succeeded', retry = 'queued', defer = 'queued', release = 'queued', dead = 'dead', cancel = 'cancelled'}
for i = 5, #ARGV, 6 do
  local id, worker, attempt, code, run_at, text = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'k', 'm', 'ik')
  local t = h[2] and unm(h[2])
  if not t then
    out[#out + 1] = {'conflict', false, 'no such job'}
  elseif t.s ~= 'running' or t.o ~= worker or t.a ~= tonumber(attempt) then
    local owner = t.o
    if owner == '' then owner = 'none' end
    out[#out + 1] = {'conflict', t.s, 'not held by ' .. worker .. ' at attempt ' .. attempt ..
      ' (state ' .. t.s .. ', attempt ' .. t.a .. ', owner ' .. owner .. ')'}
  else
    -- A cancel asked for while the job ran wins over putting it back in the queue.
    if t.cr and TARGET[code] == 'queued' then
      code = 'cancel'
      text = 'cancelled by request'
    end
    local to = TARGET[code]
    local kind = h[1]
    local w = {'HSET', key}
    local reason = nil
    if code == 'ok' then
      if text ~= '' then w[#w + 1] = 'res'; w[#w + 1] = text end
    elseif code == 'retry' then
      t.r = tonumber(run_at)
      w[#w + 1] = 'le'; w[#w + 1] = text
      reason = text
    elseif code == 'defer' then
      t.r = tonumber(run_at)
      t.a = math.max(0, t.a - 1)
      reason = text
    elseif code == 'release' then
      t.r = now
      t.a = math.max(0, t.a - 1)
      reason = text
    elseif code == 'dead' then
      w[#w + 1] = 'le'; w[#w + 1] = text
      reason = text
    else
      reason = text
    end
    t.v = t.v + 1
    local dropped = push_event(w, t, snow, 'running', to, t.a, worker, reason, keep)
    t.s = to; t.u = now; t.o = ''; t.x = nil
    if to ~= 'queued' then t.f = now end
    w[#w + 1] = 'm'; w[#w + 1] = mk(t)
    redis.call(unpack(w))
    if dropped then redis.call('HDEL', key, dropped) end
    move(id, 'running', to)
    tally('running', kind, -1)
    tally(to, kind, 1)
    if to ~= 'queued' then
      local k = retention
      if to == 'dead' then k = dead_keep end
      finished(id, key, kind, h[3], to, now, k)
    end
    out[#out + 1] = {'applied', to, t.v}
  end
end
flush_moves()
flush_tallies()
flush_done()
sweep(now, sweep_limit)
return out
