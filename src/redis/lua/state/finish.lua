-- ARGV: events kept, retention (us), dead retention (us), sweep limit, then groups of 6:
-- id, worker, claim token, code (ok|retry|defer|dead|cancel|release), delay (us, for retry
-- and defer; counted from this server's clock) or '', text.
-- Returns, flat, three values per transition: 'applied', state, version or 'conflict',
-- state or false, reason.
local keep, retention, dead_keep, sweep_limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local ids = {}
for i = 5, #ARGV, 6 do ids[#ids + 1] = ARGV[i] end
local ms = hmget(P .. ':m', ids)
local cur = {}
local requeued = 0
for j, id in ipairs(ids) do
  local i = 5 + (j - 1) * 6
  local worker, token, code, delay, text = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local m = cur[id] or ms[j]
  local t = m and unm(m)
  if not t then
    out[#out + 1] = 'conflict'
    out[#out + 1] = false
    out[#out + 1] = 'no such job'
  elseif t.s ~= RUNNING or t.ct ~= tonumber(token) then
    local owner = t.o
    if owner == '' then owner = 'none' end
    out[#out + 1] = 'conflict'
    out[#out + 1] = NAME[t.s]
    out[#out + 1] = 'not held by ' .. worker .. "'s claim " .. token ..
      ' (state ' .. NAME[t.s] .. ', latest claim ' .. fmt(t.ct) .. ', owner ' .. owner .. ')'
  else
    local to, nm = settle_held(t, id, code, delay, text, worker, keep, retention, dead_keep)
    if to == QUEUED then requeued = requeued + 1 end
    cur[id] = nm
    out[#out + 1] = 'applied'
    out[#out + 1] = NAME[to]
    out[#out + 1] = t.v
  end
end
requeued = requeued + settle_steps(keep, retention)
settled(requeued, sweep_limit)
return out
