-- ARGV: retention (us), dead retention (us), sweep limit, then groups of 7: id, the record
-- (`m`) the caller expects, the record to write, kind, queue, priority, lane score ('' when
-- the job is finished). A settlement applies only where the stored record is exactly the
-- expected one (a compare-and-set on the whole record: version, state, owner and attempt
-- included), so the caller computed the transition from what is really there.
-- Returns, per group, 1 (applied) or 0 (the record differs: settle it with `finish`).
local retention, dead_keep, sweep_limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = {}
for i = 4, #ARGV, 7 do ids[#ids + 1] = ARGV[i] end
local ms = hmget(P .. ':m', ids)
local out = {}
local requeued = 0
local t = T
for j, id in ipairs(ids) do
  local i = 4 + (j - 1) * 7
  local nm = ARGV[i + 2]
  if ms[j] ~= ARGV[i + 1] or M_OUT[id] then
    out[j] = 0
  else
    out[j] = 1
    put_m(id, nm)
    local kind, q = ARGV[i + 3], ARGV[i + 4]
    local to = string.byte(nm, 1)
    zrem(run_key(q), id)
    tally(RUNNING, kind, -1)
    tally(to, kind, 1)
    t.s, t.k, t.q, t.pr, t.fl, t.ik = to, kind, q, tonumber(ARGV[i + 5]), 0, ''
    if to == QUEUED then
      local score = ARGV[i + 6]
      file(t, id, score, tonumber(score) > NOW)
      requeued = requeued + 1
    elseif to == DEAD then
      finished(t, id, dead_keep)
    else
      finished(t, id, retention)
    end
  end
end
flush()
if requeued > 0 then redis.call('PUBLISH', P .. ':wake', requeued) end
sweep(sweep_limit)
return out
