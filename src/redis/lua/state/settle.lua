-- ARGV: retention (us), dead retention (us), sweep limit, events kept (for the steps a
-- finished workflow step settles), then groups of 9: id, the version
-- the caller's copy of the record has, the record to write, kind, queue, priority, lane
-- score ('' when the job is finished), idempotency key ('' none), '1' for a retry (counted
-- in "retried") or ''. A settlement applies only
-- where the stored record still has that version (every change but a heartbeat's lease
-- extension makes a new one, and the settled record drops the lease), so the caller
-- computed the transition from what is really there.
-- Returns, per group, 1 (applied) or 0 (the record differs: settle it with `finish`).
local retention, dead_keep, sweep_limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
local ids = {}
for i = 5, #ARGV, 9 do ids[(i + 4) / 9] = ARGV[i] end
local ms = hmget(P .. ':m', ids)
local out = {}
local requeued = 0
local t = T
for j, id in ipairs(ids) do
  local i = 5 + (j - 1) * 9
  local nm = ARGV[i + 2]
  local m = ms[j]
  if not m or struct.unpack('<d', m, 3) ~= tonumber(ARGV[i + 1]) or M_OUT[id] then
    out[j] = 0
  else
    out[j] = 1
    put_m(id, nm)
    local kind, q = ARGV[i + 3], ARGV[i + 4]
    local to = string.byte(nm, 1)
    tally(RUNNING, kind, -1)
    tally(to, kind, 1)
    if ARGV[i + 8] == '1' then tallies.retried = (tallies.retried or 0) + 1 end
    t.s, t.k, t.q, t.pr, t.fl, t.ik = to, kind, q, tonumber(ARGV[i + 5]), 0, ARGV[i + 7]
    -- (finished() reads the step flag)
    t.fl = band(string.byte(nm, 2), F_STEP)
    if to == QUEUED then
      -- Waiting or due as the record's flag says, so the two always agree.
      file(t, id, ARGV[i + 6], has(string.byte(nm, 2), F_DK))
      requeued = requeued + 1
    else
      if to == DEAD then finished(t, id, dead_keep) else finished(t, id, retention) end
      if has(string.byte(nm, 2), F_STEP) then step_ended(id, to) end
    end
  end
end
requeued = requeued + settle_steps(keep, retention)
settled(requeued, sweep_limit)
return out
