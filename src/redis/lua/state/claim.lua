-- ARGV: mode, worker, lease (us), events kept, sweep limit, dead retention (us), retention
-- (us), then
--   mode 'ids': the job ids to claim;
--   mode 'due': most jobs, then the queues to take from. Takes running jobs whose lease
--   expired first, then due jobs from the lanes: highest priority first, each lane in the
--   order its jobs became due.
--   Mode 'due' also takes, last, a claim name: its lease batches are named after it, so a
--   caller whose answer was lost can hand the jobs back by that name (handback.lua).
-- Returns {claims, next, now}: claims flat, four values per job: 'claimed', id, d, m |
-- 'notdue', id, run_at, false | 'exhausted', id, reason, false | 'cancelled', id, reason,
-- false | 'skipped', id, state or false, false ('due' answers only 'claimed', 'exhausted'
-- and 'cancelled'); next: when nothing was claimed in mode 'due', the earliest time (us, as
-- text) something comes due, or false; now: Redis's clock (us, as text).
-- A claim's token is the version it makes (t.ct): heartbeats and finishes are fenced on it.
local mode, worker = ARGV[1], ARGV[2]
local lease, keep = tonumber(ARGV[3]), tonumber(ARGV[4])
local sweep_limit, dead_keep, retention = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local due = mode == 'due'
local ids = {}
local claim_name = nil
local last_queue = #ARGV
if not due then
  for i = 8, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  local max = tonumber(ARGV[8])
  claim_name = ARGV[#ARGV]
  last_queue = #ARGV - 1
  local queues = {}
  for i = 9, last_queue do queues[#queues + 1] = ARGV[i] end
  for _, q in ipairs(queues) do
    if #ids >= max then break end
    for _, id in ipairs(reap(q, max - #ids, 4, SNOW)) do ids[#ids + 1] = id end
  end
  -- Waiting jobs that came due join the tail of their lane.
  for _, q in ipairs(queues) do promote(q, max) end
  -- Lanes of every queue, highest priority first (queues of one priority in the order
  -- given); each lane in the order its jobs became due.
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
  for _, lane in ipairs(lanes) do
    local need = max - #ids
    if need <= 0 then break end
    local got = redis.call('LPOP', lane.key, need)
    if not got then got = {} end
    local n = #ids
    for k = 1, #got do ids[n + k] = got[k] end
    if #got < need then
      -- Emptied: off the queue's list of lanes (a job filed later puts it back).
      redis.call('ZREM', P .. ':l:' .. lane.q, lane.pr)
    end
  end
end

local out, n_out = {}, 0
local trim = {} -- mode 'ids': lanes whose head may now hold jobs that moved on
local function answer(a, b, c, d)
  local n = n_out
  out[n + 1] = a
  out[n + 2] = b
  out[n + 3] = c
  out[n + 4] = d
  n_out = n + 4
end
local ms = hmget(P .. ':m', ids)
local ds = hmget(P .. ':d', ids)
local running_score = fmt(NOW + lease)
local expiry = NOW + lease
-- The event every plain claim writes (push_event's packing, no reason), but for the attempt.
local claim_event_head = struct.pack('<dBBB', NOW, QUEUED, RUNNING, 1)
local claim_event_tail = struct.pack('<Ic0I', #worker, worker, 0)
local owner_field = struct.pack('<I', #worker) .. worker
-- The common case, a due queued job whose history has room, takes a path of its own: the new
-- record is the old one with its fixed part and lease owner rewritten and the claim's event
-- appended, spliced as strings instead of unpacked and packed whole (every string a script
-- makes costs Redis a hash of all its bytes). Returns whether it claimed the job; the others
-- take the full path below.
local function claim_plain(id, m, d)
  if string.byte(m, 1) ~= QUEUED or has(string.byte(m, 2), F_DK) then return false end
  local _, fl, v, a, ma, r, _, _, f, _, pr, ne, _, o, k, q = struct.unpack(CLAIM_FORMAT, m)
  if r > NOW or ne >= keep then return false end
  v = v + 1
  a = a + 1
  local nm = struct.pack(HEAD_FORMAT, RUNNING, bor(fl, F_STARTED + F_LEASE), v, a, ma, r,
      NOW, NOW, f, expiry, pr, ne + 1, v) .. owner_field .. string.sub(m, 77 + #o) ..
    claim_event_head .. struct.pack('<I', a) .. claim_event_tail
  if not due then trim[lane_key(q, pr)] = true end
  put_m(id, nm)
  leased(q, id)
  tally(QUEUED, k, -1)
  tally(RUNNING, k, 1)
  answer('claimed', id, d, nm)
  return true
end
for j, id in ipairs(ids) do
  -- (A record this call wrote already, for an id it met twice: M_OUT, empty until here.)
  local m = M_OUT[id] or ms[j]
  if m and claim_plain(id, m, ds[j]) then
    -- (claimed on the plain path)
  elseif not m then
    -- (mode 'due': the entry was popped or its lease batch dropped already)
    if not due then answer('skipped', id, false, false) end
  else
    local t = unm(m)
    local from = t.s
    local reason, exhausted, go = nil, false, false
    if from == QUEUED then
      if t.r > NOW then
        if due then
          -- Filed as due by a clock ahead of this one: wait for its run_at.
          unfile(t, id)
          file(t, id, fmt(t.r), true)
          local nm = mk(t)
          put_m(id, nm)
        else
          answer('notdue', id, fmt(t.r), false)
        end
      else
        go = true
      end
    elseif from == RUNNING and has(t.fl, F_LEASE) and t.x <= NOW then
      local owner = t.o
      if owner == '' then owner = 'unknown' end
      exhausted = t.a >= t.ma or has(t.fl, F_CANCEL)
      if has(t.fl, F_CANCEL) then
        reason = 'cancelled by request; the lease of ' .. owner .. ' expired during attempt ' .. t.a
      elseif exhausted then
        reason = 'worker_lost: lease of ' .. owner .. ' expired during attempt ' .. t.a .. ' of ' .. t.ma .. '; no attempts left'
      else
        reason = 'lease of ' .. owner .. ' expired during attempt ' .. t.a .. '; taken over'
      end
      go = true
    elseif due then
      -- A lane entry whose job moved on: popped, so gone.
    else
      answer('skipped', id, NAME[from], false)
    end
    if go then
      t.v = t.v + 1
      t.u = NOW
      if from == QUEUED then
        if not due and not has(t.fl, F_DK) then trim[lane_key(t.q, t.pr)] = true end
        unfile(t, id)
      end
      if exhausted then
        -- A dead worker's job ends here: cancelled when a cancel was asked for, else dead.
        local to = DEAD
        if has(t.fl, F_CANCEL) then to = CANCELLED end
        push_event(t, from, to, worker, reason, keep)
        t.s = to; t.f = NOW; t.o = ''; t.x = 0
        t.fl = bor(band(t.fl, bnot(F_LEASE)), F_FINISHED)
        if to == DEAD then
          t.fl = bor(t.fl, F_LE)
          t.le = reason
        end
        local nm = mk(t)
        put_m(id, nm)
        tally(from, t.k, -1)
        tally(to, t.k, 1)
        if to == DEAD then
          finished(t, id, dead_keep)
          answer('exhausted', id, reason, false)
        else
          finished(t, id, retention)
          answer('cancelled', id, reason, false)
        end
        if has(t.fl, F_STEP) then step_ended(id, to) end
      else
        t.a = t.a + 1
        push_event(t, from, RUNNING, worker, reason, keep)
        t.s = RUNNING; t.o = worker; t.x = NOW + lease; t.st = NOW; t.ct = t.v
        t.fl = bor(t.fl, F_STARTED + F_LEASE)
        local nm = mk(t)
        put_m(id, nm)
        leased(t.q, id)
        if from ~= RUNNING then
          tally(from, t.k, -1)
          tally(RUNNING, t.k, 1)
        end
        answer('claimed', id, ds[j], nm)
      end
    end
  end
end
-- Workflow steps after the jobs that ended here (a dead worker's last attempt).
local steps_queued = settle_steps(keep, retention)
flush()
if steps_queued > 0 then redis.call('PUBLISH', P .. ':wake', steps_queued) end
flush_leases(running_score, claim_name)
-- Mode 'ids' (a separate queue delivers): drop lane heads whose jobs moved on, so lanes do
-- not grow; a head still queued stops the trim (its job is yet to be delivered).
for key in pairs(trim) do
  local heads = redis.call('LRANGE', key, 0, 199)
  local hm = hmget(P .. ':m', heads)
  local k = 0
  for i = 1, #heads do
    local m = hm[i]
    if m and string.byte(m, 1) == QUEUED and not has(string.byte(m, 2), F_DK) then break end
    k = k + 1
  end
  if k > 0 then redis.call('LTRIM', key, k, -1) end
end
local next_due = false
if due and n_out == 0 then
  local best = nil
  for i = 9, last_queue do
    local q = ARGV[i]
    for _, key in ipairs({run_key(q), wait_key(q)}) do
      local h = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if h[2] and (not best or tonumber(h[2]) < best) then best = tonumber(h[2]) end
    end
  end
  if best then next_due = fmt(best) end
end
sweep(sweep_limit, due)
return {out, next_due, SNOW}
