-- ARGV: events kept, retention (us), dead retention (us), sweep limit, then groups of 6:
-- id, worker, attempt, code (ok|retry|defer|dead|cancel|release), run_at (us or ''), text.
-- Returns per transition {'applied', state, version} or {'conflict', state or false, reason}.
local keep, retention, dead_keep, sweep_limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_us()
local out = {}
local TARGET = {ok = 'succeeded', retry = 'queued', defer = 'queued', release = 'queued', dead = 'dead', cancel = 'cancelled'}
for i = 5, #ARGV, 6 do
  local id, worker, attempt, code, run_at, text = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local key = job_key(id)
  local h = hget_record(key)
  local s = h[F.s]
  if not s then
    out[#out + 1] = {'conflict', false, 'no such job'}
  elseif s ~= 'running' or h[F.o] ~= worker or h[F.a] ~= attempt then
    out[#out + 1] = {'conflict', s, 'not held by ' .. worker .. ' at attempt ' .. attempt ..
      ' (state ' .. s .. ', attempt ' .. (h[F.a] or '?') .. ', owner ' .. (h[F.o] or 'none') .. ')'}
  else
    -- A cancel asked for while the job ran wins over putting it back in the queue.
    if h[F.cr] == '1' and TARGET[code] == 'queued' then
      code = 'cancel'
      text = 'cancelled by request'
    end
    local to = TARGET[code]
    local w = {'HSET', key}
    local a = tonumber(h[F.a])
    local reason = nil
    if code == 'ok' then
      if text ~= '' then w[#w + 1] = 'res'; w[#w + 1] = text end
    elseif code == 'retry' then
      w[#w + 1] = 'r'; w[#w + 1] = run_at
      w[#w + 1] = 'le'; w[#w + 1] = text
      reason = text
    elseif code == 'defer' then
      w[#w + 1] = 'r'; w[#w + 1] = run_at
      a = math.max(0, a - 1)
      reason = text
    elseif code == 'release' then
      w[#w + 1] = 'r'; w[#w + 1] = fmt(now)
      a = math.max(0, a - 1)
      reason = text
    elseif code == 'dead' then
      w[#w + 1] = 'le'; w[#w + 1] = text
      reason = text
    else
      reason = text
    end
    local v = tonumber(h[F.v]) + 1
    local dropped = push_event(w, h, now, 'running', to, a, worker, reason, keep)
    w[#w + 1] = 's'; w[#w + 1] = to
    w[#w + 1] = 'a'; w[#w + 1] = tostring(a)
    w[#w + 1] = 'u'; w[#w + 1] = fmt(now)
    w[#w + 1] = 'v'; w[#w + 1] = tostring(v)
    if to ~= 'queued' then w[#w + 1] = 'f'; w[#w + 1] = fmt(now) end
    redis.call(unpack(w))
    redis.call('HDEL', key, 'o', 'x', dropped or 'o')
    move(id, 'running', to)
    tally('running', h[F.k], -1)
    tally(to, h[F.k], 1)
    if to ~= 'queued' then
      local k = retention
      if to == 'dead' then k = dead_keep end
      finished(id, key, h, to, now, k)
    end
    out[#out + 1] = {'applied', to, v}
  end
end
flush_moves()
flush_tallies()
flush_done()
sweep(now, sweep_limit)
return out
