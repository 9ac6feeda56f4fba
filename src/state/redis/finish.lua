-- ARGV: events kept, retention (us), dead retention (us), sweep limit, then groups of 6:
-- id, worker, attempt, code (ok|retry|defer|dead|cancel|release), run_at (us or ''), text.
-- Returns, flat, three values per transition: 'applied', state, version or 'conflict',
-- state or false, reason.
local keep, retention, dead_keep, sweep_limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local TARGET = {ok = SUCCEEDED, retry = QUEUED, defer = QUEUED, release = QUEUED, dead = DEAD, cancel = CANCELLED}
local ids = {}
for i = 5, #ARGV, 6 do ids[#ids + 1] = ARGV[i] end
local ms = hmget(P .. ':m', ids)
local cur = {}
local requeued = 0
for j, id in ipairs(ids) do
  local i = 5 + (j - 1) * 6
  local worker, attempt, code, run_at, text = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local m = cur[id] or ms[j]
  local t = m and unm(m)
  if not t then
    out[#out + 1] = 'conflict'
    out[#out + 1] = false
    out[#out + 1] = 'no such job'
  elseif t.s ~= RUNNING or t.o ~= worker or t.a ~= tonumber(attempt) then
    local owner = t.o
    if owner == '' then owner = 'none' end
    out[#out + 1] = 'conflict'
    out[#out + 1] = NAME[t.s]
    out[#out + 1] = 'not held by ' .. worker .. ' at attempt ' .. attempt ..
      ' (state ' .. NAME[t.s] .. ', attempt ' .. t.a .. ', owner ' .. owner .. ')'
  else
    -- A cancel asked for while the job ran wins over putting it back in the queue.
    if has(t.fl, F_CANCEL) and TARGET[code] == QUEUED then
      code = 'cancel'
      text = 'cancelled by request'
    end
    local to = TARGET[code]
    local reason = nil
    local score = nil
    if code == 'ok' then
      if text ~= '' then t.res = text; t.fl = bor(t.fl, F_RES) end
    elseif code == 'retry' then
      t.r = tonumber(run_at); score = run_at
      t.le = text; t.fl = bor(t.fl, F_LE)
      reason = text
    elseif code == 'defer' then
      t.r = tonumber(run_at); score = run_at
      t.a = math.max(0, t.a - 1)
      reason = text
    elseif code == 'release' then
      t.r = NOW; score = SNOW
      t.a = math.max(0, t.a - 1)
      reason = text
    elseif code == 'dead' then
      t.le = text; t.fl = bor(t.fl, F_LE)
      reason = text
    else
      reason = text
    end
    t.v = t.v + 1
    push_event(t, RUNNING, to, worker, reason, keep)
    t.s = to; t.u = NOW; t.o = ''; t.x = 0
    t.fl = band(t.fl, bnot(F_LEASE))
    if to == QUEUED then
      file(t, id, score, t.r > NOW)
      requeued = requeued + 1
    else
      t.f = NOW
      t.fl = bor(t.fl, F_FINISHED)
      if to == DEAD then finished(t, id, dead_keep) else finished(t, id, retention) end
    end
    local nm = mk(t)
    put_m(id, nm)
    cur[id] = nm
    tally(RUNNING, t.k, -1)
    tally(to, t.k, 1)
    out[#out + 1] = 'applied'
    out[#out + 1] = NAME[to]
    out[#out + 1] = t.v
  end
end
settled(requeued, sweep_limit)
return out
