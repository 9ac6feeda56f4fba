-- Shared by every state script (prepended to each). KEYS[1] is the namespace's hash tag
-- `{<namespace>}`: all state keys carry it, so multi-job scripts are cluster-safe (the state
-- of one namespace lives in one slot).
--
-- Records live in two hashes shared by every job, so a script reads and writes a whole batch
-- with one command each instead of one per job (a command called from Lua costs about a
-- microsecond of Redis's one thread however little it does):
--   P:d          HASH  id -> JSON of what never changes (payload, queue, priority, tags, ...)
--   P:m          HASH  id -> what changes and what the scripts need, packed (see `unm`)
-- Indexes and queues (ZSETs), all of a size set by the live jobs, queues and kinds:
--   P:kinds      SET of the kinds ever filed (listing without a kind merges their indexes)
--   P:i:k:<kind> every retained id of a kind (score 0, so ordered by id = creation);  P:i:s:dead, P:i:s:cancelled  ids in those (rare) states
--   P:w:<queue>  queued ids waiting for a later run_at, score run_at (us)
--   P:r:<queue>  lease batches: member a batch name, score the leases' expiry (us); the
--                batch's ids (36 bytes each, concatenated) in the HASH P:rb. A claim names
--                its batches `<claim name>@<queue>`, other batches are numbered by P:rseq.
--                One batch per claim or heartbeat call and queue, so a claim files its
--                leases with two commands; a batch is read once its leases expire.
--   P:l:<queue>  the queue's lanes: member priority, score -priority
--   P:dk:<kind>  the waiting ids again, by kind (per-kind delayed counts)
-- Lanes (LISTs):  P:q:<queue>:<priority>  due ids, in the order they became due
--   P:done, P:done:dead  LISTs of finished jobs, each after the time (us, as text) its
--                retention ends (one list per retention, so each is in expiry order):
--                state letter (upper case: has an idempotency key), id, kind
--   P:c          HASH "<state>:<kind>" -> count, and "retried" -> retries ever;
--   P:queues     SET of queue names
--   P:ik:<key>   STRING idempotency key -> job id
--   P:deleted    SET of the ids of jobs deleted before their retention ended, until the
--                sweep passes their retention entries
-- Workflow steps (`crate::workflow`; their links are in d):
--   P:i:wf:<workflow id>  ZSET of its steps (score 0, so by id = the order they were added)
--   P:wf:dep     HASH id -> the ids of the steps after it, 36 bytes each (until it ends)
--   P:wf:s       HASH id -> a pending step's policy (c1: c, s or r), dependencies left (I)
--                and own delay (d, us), packed
--   P:prog       HASH id -> the latest progress report of a job's handler (JSON)
-- Times are microseconds since 1970. Scores go to Redis as text formatted once per call
-- (a Lua number would be formatted with 14 digits, too few for microseconds).
local P = KEYS[1]

local function fmt(n) return string.format('%.0f', n) end

local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local SNOW = fmt(NOW)

-- State codes (as in `m`) and names.
local QUEUED, RUNNING, SUCCEEDED, DEAD, CANCELLED, PENDING = 1, 2, 3, 4, 5, 6
local NAME = {'queued', 'running', 'succeeded', 'dead', 'cancelled', 'pending'}
local CODE = {queued = 1, running = 2, succeeded = 3, dead = 4, cancelled = 5, pending = 6}

-- Flags in `m` (F_STEP: a workflow step).
local F_STARTED, F_FINISHED, F_LEASE, F_CANCEL, F_LE, F_RES, F_DK, F_STEP = 1, 2, 4, 8, 16, 32, 64, 128
local band, bor, bnot = bit.band, bit.bor, bit.bnot
local function has(fl, f) return band(fl, f) ~= 0 end

-- m, packed little-endian so reading and writing it is one C call each: state (B), flags (B),
-- version (d), attempt (I), max attempts (I), run_at, updated, started, finished, lease
-- expiry (d, us), priority (h), events kept (I), claim token (d: the version the latest
-- claim made; heartbeats and finishes are fenced on it), then six strings, each a length
-- (I) and its bytes: lease owner, kind, queue, idempotency key, last error, result; then
-- the events.
-- An event: at (d, us), from (B), to (B), flags (B: 1 worker, 2 reason), attempt (I),
-- worker and reason (length I + bytes each).
local M_FORMAT = '<BBdIIdddddhIdIc0Ic0Ic0Ic0Ic0Ic0'
-- The fixed part (72 bytes), and it with the lease owner, kind and queue (what a claim reads).
local HEAD_FORMAT = '<BBdIIdddddhId'
local CLAIM_FORMAT = '<BBdIIdddddhIdIc0Ic0Ic0'
local E_FORMAT = '<dBBBIIc0Ic0'
-- Decoded into one table reused for every record (a new table per job costs Redis about a
-- microsecond): a script handles one record at a time.
local T = {s = 0, fl = 0, v = 0, a = 0, ma = 0, r = 0, u = 0, st = 0, f = 0, x = 0, pr = 0,
           ne = 0, ct = 0, o = '', k = '', q = '', ik = '', le = '', res = '', ev = ''}
local function unm_into(t, m)
  local pos
  -- (struct's `c0` takes the length before it off the results)
  t.s, t.fl, t.v, t.a, t.ma, t.r, t.u, t.st, t.f, t.x, t.pr, t.ne, t.ct, t.o, t.k, t.q, t.ik,
    t.le, t.res, pos = struct.unpack(M_FORMAT, m)
  t.ev = string.sub(m, pos)
  return t
end
local function unm(m) return unm_into(T, m) end
local function mk(t)
  return struct.pack(M_FORMAT, t.s, t.fl, t.v, t.a, t.ma, t.r, t.u, t.st, t.f, t.x, t.pr, t.ne,
    t.ct, #t.o, t.o, #t.k, t.k, #t.q, t.q, #t.ik, t.ik, #t.le, t.le, #t.res, t.res) .. t.ev
end

-- Append a transition to t's history, keeping the first and the latest: `keep` in all.
local function push_event(t, from, to, worker, reason, keep)
  local ef = 0
  if worker then ef = 1 else worker = '' end
  if reason then ef = ef + 2 else reason = '' end
  local e = struct.pack(E_FORMAT, NOW, from, to, ef, t.a, #worker, worker, #reason, reason)
  local ev = t.ev
  if t.ne >= keep then
    local p2 = select(8, struct.unpack(E_FORMAT, ev))
    if keep >= 2 then
      local p3 = select(8, struct.unpack(E_FORMAT, ev, p2))
      ev = string.sub(ev, 1, p2 - 1) .. string.sub(ev, p3)
    else
      ev = string.sub(ev, p2)
    end
  else
    t.ne = t.ne + 1
  end
  t.ev = ev .. e
end

-- Key names, built once per call.
local key_cache = {}
local function cached(kind, a, b)
  local by = key_cache[kind]
  if not by then by = {}; key_cache[kind] = by end
  local k = by[a]
  if b ~= nil then
    if not k then k = {}; by[a] = k end
    local v = k[b]
    if not v then v = P .. ':' .. kind .. ':' .. a .. ':' .. b; k[b] = v end
    return v
  end
  if not k then k = P .. ':' .. kind .. ':' .. a; by[a] = k end
  return k
end
local function lane_key(q, pr) return cached('q', q, pr) end
local function run_key(q) return cached('r', q) end
local function kind_key(k) return cached('i:k', k) end
local function dk_key(k) return cached('dk', k) end
local function wait_key(q) return cached('w', q) end
local STATE_INDEX = {[DEAD] = P .. ':i:s:dead', [CANCELLED] = P .. ':i:s:cancelled'}
-- Finished ids to append to the retention lists (see `finished`).
local DONE, DONE_DEAD = P .. ':done', P .. ':done:dead'
local DONE_OUT = {}
-- Ids of finished jobs deleted before their retention ended, until the sweep reaches their
-- entries in the retention lists (SET).
local DELETED = P .. ':deleted'

-- Index and queue updates, gathered per command and key and sent in bulk at the end:
-- removals first, then additions, so an id removed and re-added in one call stays.
local REM, ADD = {}, {}
local function zrem(key, id) append(REM, key, id) end
local function zadd(key, score, id)
  local l = ADD[key]
  if not l then l = {}; ADD[key] = l end
  local n = #l
  l[n + 1] = score
  l[n + 2] = id
end

-- Filing a queued job: due ones at the tail of their lane (a LIST, so a claim pops a batch
-- from the head without naming an id), later ones in the queue's waiting set until a claim
-- finds them due and moves them to their lane. An entry whose job moved on by other means
-- (cancelled, or claimed through a separate queue) stays in its lane until popped or
-- trimmed and is then dropped: removing it from the middle of a list would cost a scan.
local PUSH = {}
local new_lanes = {}
local function file(t, id, score, delayed)
  if delayed then
    zadd(wait_key(t.q), score, id)
    zadd(dk_key(t.k), score, id)
    t.fl = bor(t.fl, F_DK)
    new_lanes[t.q] = new_lanes[t.q] or {}
  else
    append(PUSH, lane_key(t.q, t.pr), id)
    local by = new_lanes[t.q]
    if not by then by = {}; new_lanes[t.q] = by end
    by[t.pr] = true
  end
end
-- A queued job leaves the queue: out of the waiting set if it waited there (its lane entry,
-- if any, is dropped when reached).
local function unfile(t, id)
  if has(t.fl, F_DK) then
    zrem(wait_key(t.q), id)
    zrem(dk_key(t.k), id)
    t.fl = band(t.fl, bnot(F_DK))
  end
end

-- Leases: the jobs leased in this call, by queue, filed as one batch each at the end.
local LEASED = {}
local function leased(q, id) append(LEASED, q, id) end
-- A batch is named by a number from P:rseq, or by the caller (a claim names its batches
-- `<claim name>@<queue>`, so a claim whose answer was lost can be found and handed back).
local function new_batch(q, score, ids, name)
  local b = name or redis.call('INCR', P .. ':rseq')
  redis.call('HSET', P .. ':rb', b, table.concat(ids))
  redis.call('ZADD', run_key(q), score, b)
end
local function flush_leases(score, name)
  for q, ids in pairs(LEASED) do
    local b = nil
    if name then b = name .. '@' .. q end
    new_batch(q, score, ids, b)
  end
  LEASED = {}
end
-- The lease batches of queue q that expired (at most `batches` of them) are read and
-- dropped. Returns the jobs in them still running on an expired lease, at most `take`;
-- any more are filed again as a batch of their own, due at `again` (us, as text). The
-- others moved on: finished, or their lease was extended into a later batch.
local function reap(q, take, batches, again)
  local rk = run_key(q)
  local bs = redis.call('ZRANGEBYSCORE', rk, '-inf', SNOW, 'LIMIT', 0, batches)
  if #bs == 0 then return {}, 0 end
  local lists = hmget(P .. ':rb', bs)
  local cand = {}
  for i = 1, #bs do
    local l = lists[i]
    if l then
      for k = 1, #l, 36 do cand[#cand + 1] = string.sub(l, k, k + 35) end
    end
  end
  local ms = hmget(P .. ':m', cand)
  local out, rest, seen = {}, {}, {}
  for i, id in ipairs(cand) do
    local m = ms[i]
    -- The lease expiry is the f64 at byte 51 of m.
    if m and not seen[id] and string.byte(m, 1) == RUNNING and has(string.byte(m, 2), F_LEASE)
        and struct.unpack('<d', m, 51) <= NOW then
      seen[id] = true
      if #out < take then out[#out + 1] = id else rest[#rest + 1] = id end
    end
  end
  chunked({'HDEL', P .. ':rb'}, bs)
  chunked({'ZREM', rk}, bs)
  if #rest > 0 then new_batch(q, again, rest) end
  return out, #bs
end

-- Counts per state and kind, flushed at the end; a count that reaches 0 is removed.
local tallies = {}
local tally_keys = {}
local function tally(state, kind, delta)
  local by_kind = tally_keys[state]
  if not by_kind then by_kind = {}; tally_keys[state] = by_kind end
  local f = by_kind[kind]
  if not f then f = NAME[state] .. ':' .. kind; by_kind[kind] = f end
  tallies[f] = (tallies[f] or 0) + delta
end

-- Records written in this call (id -> m), sent with one HSET at the flush.
local M_OUT = {}
local M_ORDER = {}
local M_N = 0
local function put_m(id, m)
  if M_OUT[id] == nil then
    M_N = M_N + 1
    M_ORDER[M_N] = id
  end
  M_OUT[id] = m
end

local function flush()
  if #M_ORDER > 0 then
    local flat = {}
    for i, id in ipairs(M_ORDER) do
      flat[2 * i - 1] = id
      flat[2 * i] = M_OUT[id]
    end
    chunked({'HSET', P .. ':m'}, flat)
    M_OUT, M_ORDER, M_N = {}, {}, 0
  end
  for key, ids in pairs(REM) do chunked({'ZREM', key}, ids) end
  for key, items in pairs(ADD) do chunked({'ZADD', key}, items) end
  REM, ADD = {}, {}
  for list, items in pairs(DONE_OUT) do chunked({'RPUSH', list}, items) end
  DONE_OUT = {}
  for key, ids in pairs(PUSH) do chunked({'RPUSH', key}, ids) end
  PUSH = {}
  for q, prs in pairs(new_lanes) do
    local l = {}
    for pr in pairs(prs) do
      l[#l + 1] = -pr
      l[#l + 1] = pr
    end
    if #l > 0 then chunked({'ZADD', P .. ':l:' .. q}, l) end
    redis.call('SADD', P .. ':queues', q)
  end
  new_lanes = {}
  for f, d in pairs(tallies) do
    if d ~= 0 and redis.call('HINCRBY', P .. ':c', f, d) <= 0 then
      redis.call('HDEL', P .. ':c', f)
    end
  end
  tallies = {}
end

-- A job reached a terminal state: its record goes when `keep_us` has passed (the sweep).
-- Dead jobs have a retention of their own, so a list of their own. The entry names what
-- the sweep needs besides the id, so it need not read the record: a letter for the state
-- (upper case when the job has an idempotency key), the id, the kind.
local done_at = {}
local DONE_CODE = {[SUCCEEDED] = 's', [CANCELLED] = 'c', [DEAD] = 'd'}
local DONE_CODE_IK = {[SUCCEEDED] = 'S', [CANCELLED] = 'C', [DEAD] = 'D'}
local DONE_STATE = {s = SUCCEEDED, c = CANCELLED, d = DEAD}
local function finished(t, id, keep_us)
  local at = done_at[keep_us]
  if not at then
    at = {fmt(NOW + keep_us), fmt(math.floor(keep_us / 1000) + 3600000)}
    done_at[keep_us] = at
  end
  local list = DONE
  if t.s == DEAD then list = DONE_DEAD end
  append(DONE_OUT, list, at[1])
  if t.ik ~= '' then
    append(DONE_OUT, list, DONE_CODE_IK[t.s] .. id .. t.k)
    -- The idempotency key is a key of its own; its expiry is the backstop of the sweep.
    redis.call('PEXPIRE', P .. ':ik:' .. t.ik, at[2])
  elseif has(t.fl, F_STEP) then
    -- (upper case too: the sweep reads the record, to leave its workflow's index)
    append(DONE_OUT, list, DONE_CODE_IK[t.s] .. id .. t.k)
  else
    append(DONE_OUT, list, DONE_CODE[t.s] .. id .. t.k)
  end
  if STATE_INDEX[t.s] then zadd(STATE_INDEX[t.s], '0', id) end
end

-- Drop records whose retention ran out, at most `limit` of them; unless `keep_leases`,
-- also expired lease batches, up to 8 per queue (a claim that takes over does its own), and
-- queues with nothing filed, waiting or leased (filing a job puts its queue back). Kinds
-- whose last record went leave the set of kinds. Returns how many records and batches went.
local function sweep(limit, keep_leases)
  local reaped = 0
  if not keep_leases then
    local later = fmt(NOW + 1000000)
    for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
      local _, n = reap(q, 0, 8, later)
      reaped = reaped + n
      if redis.call('EXISTS', run_key(q), wait_key(q), P .. ':l:' .. q) == 0 then
        redis.call('SREM', P .. ':queues', q)
      end
    end
  end
  local gone = {}
  for _, list in ipairs({DONE, DONE_DEAD}) do
    local room = limit - #gone
    if room <= 0 then break end
    -- Most calls find nothing due: look at the head before reading a batch.
    local head = redis.call('LINDEX', list, 0)
    if not head or tonumber(head) > NOW then room = 0 end
    local l = {}
    if room > 0 then l = redis.call('LRANGE', list, 0, 2 * room - 1) end
    local n = 0
    for i = 1, #l, 2 do
      if tonumber(l[i]) > NOW then break end
      gone[#gone + 1] = l[i + 1]
      n = n + 1
    end
    if n > 0 then redis.call('LTRIM', list, 2 * n, -1) end
  end
  -- Jobs deleted before their retention ended (delete.lua) are gone already: their
  -- entries are only passed over (and let go of the set that names them).
  if #gone > 0 and redis.call('EXISTS', DELETED) == 1 then
    local ids = {}
    for i, entry in ipairs(gone) do ids[i] = string.sub(entry, 2, 37) end
    local seen = redis.call('SMISMEMBER', DELETED, unpack(ids))
    local kept, dropped = {}, {}
    for i, entry in ipairs(gone) do
      if seen[i] == 1 then dropped[#dropped + 1] = ids[i] else kept[#kept + 1] = entry end
    end
    if #dropped > 0 then chunked({'SREM', DELETED}, dropped) end
    gone = kept
  end
  if #gone == 0 then return reaped end
  local ids, keyed, kinds = {}, {}, {}
  for i, entry in ipairs(gone) do
    local code = string.sub(entry, 1, 1)
    local id = string.sub(entry, 2, 37)
    local kind = string.sub(entry, 38)
    local state = DONE_STATE[code]
    if not state then
      state = DONE_STATE[string.lower(code)]
      keyed[#keyed + 1] = id
    end
    ids[i] = id
    kinds[kind] = true
    zrem(kind_key(kind), id)
    if STATE_INDEX[state] then zrem(STATE_INDEX[state], id) end
    tally(state, kind, -1)
  end
  -- Idempotency keys: only of the jobs that had one, and only while they still name it.
  -- Workflow steps leave their workflow's index.
  local keys = {}
  if #keyed > 0 then
    local ms = hmget(P .. ':m', keyed)
    for i, id in ipairs(keyed) do
      if ms[i] then
        local t = unm(ms[i])
        local ik = t.ik
        if ik ~= '' and redis.call('GET', P .. ':ik:' .. ik) == id then keys[#keys + 1] = P .. ':ik:' .. ik end
        if has(t.fl, F_STEP) then
          local d = redis.call('HGET', P .. ':d', id)
          local step = d and cjson.decode(d).step
          if step then zrem(P .. ':i:wf:' .. step.workflow, id) end
        end
      end
    end
  end
  if #keys > 0 then chunked({'DEL'}, keys) end
  chunked({'HDEL', P .. ':d'}, ids)
  chunked({'HDEL', P .. ':m'}, ids)
  chunked({'HDEL', P .. ':prog'}, ids)
  flush()
  for kind in pairs(kinds) do
    if redis.call('EXISTS', kind_key(kind)) == 0 then redis.call('SREM', P .. ':kinds', kind) end
  end
  return #gone + reaped
end

-- A new job, queued: its record `m` (as the submitter packed it) with run_at `delay` (us)
-- from this server's clock and the update time, filed as due or waiting, and counted.
-- t holds its queue, priority and kind.
local function queue_new(t, id, m, delay)
  local run_at = NOW + delay
  local delayed = run_at > NOW
  if delayed then
    -- (the flag of a job filed as waiting, bit 64 of byte 2)
    m = string.sub(m, 1, 1) .. string.char(bor(string.byte(m, 2), F_DK)) .. string.sub(m, 3)
  end
  -- run_at and updated (the two f64s at bytes 19 to 34 of m) by this server's clock.
  put_m(id, string.sub(m, 1, 18) .. struct.pack('<dd', run_at, NOW) .. string.sub(m, 35))
  -- (the score only for the waiting set: a due job's lane has none)
  file(t, id, delayed and fmt(run_at), delayed)
  tally(QUEUED, t.k, 1)
end

-- The end of a create: the records' fixed parts (`dflat`: id, d, ...), the kinds met, what
-- was gathered, and a wake-up for idle claims when `filed` jobs were filed.
local function store_created(dflat, kinds, filed)
  chunked({'HSET', P .. ':d'}, dflat)
  local kind_list = {}
  for kind in pairs(kinds) do kind_list[#kind_list + 1] = kind end
  if #kind_list > 0 then chunked({'SADD', P .. ':kinds'}, kind_list) end
  flush()
  if filed > 0 then redis.call('PUBLISH', P .. ':wake', filed) end
end

-- Workflow steps that ended in this call, (id, state) flat: the steps after them are
-- settled by `settle_steps` before the call ends.
local STEP_DONE = {}
local function step_ended(id, to)
  STEP_DONE[#STEP_DONE + 1] = id
  STEP_DONE[#STEP_DONE + 1] = to
end
local W = {s = 0, fl = 0, v = 0, a = 0, ma = 0, r = 0, u = 0, st = 0, f = 0, x = 0, pr = 0,
           ne = 0, ct = 0, o = '', k = '', q = '', ik = '', le = '', res = '', ev = ''}
-- The pending steps after each step that ended: each counts it down and is queued when it
-- was the last it waited for, or ends as its policy says (c: cancelled, s: skipped, that
-- is succeeded with no result; r: runs anyway), and a step ended here ends the steps after
-- it in turn. The decision is `crate::workflow::settle`'s. Returns how many were queued.
local function settle_steps(keep, retention)
  local queued = 0
  local i = 1
  while i <= #STEP_DONE do
    local done, ended = STEP_DONE[i], STEP_DONE[i + 1]
    i = i + 2
    local deps = redis.call('HGET', P .. ':wf:dep', done)
    if deps then
      redis.call('HDEL', P .. ':wf:dep', done)
      for k = 1, #deps, 36 do
        local id = string.sub(deps, k, k + 35)
        local m = M_OUT[id] or redis.call('HGET', P .. ':m', id)
        local s = m and string.byte(m, 1) == PENDING and redis.call('HGET', P .. ':wf:s', id)
        if s then
          local pol, left, delay = struct.unpack('<c1Id', s)
          local to = nil
          if ended == SUCCEEDED or pol == 'r' then
            if left > 1 then
              redis.call('HSET', P .. ':wf:s', id, struct.pack('<c1Id', pol, left - 1, delay))
            else
              to = QUEUED
            end
          elseif pol == 's' then
            to = SUCCEEDED
          else
            to = CANCELLED
          end
          if to then
            redis.call('HDEL', P .. ':wf:s', id)
            local t = unm_into(W, m)
            t.v = t.v + 1
            t.u = NOW
            local reason
            if to == QUEUED then
              reason = 'dependencies succeeded'
            elseif to == SUCCEEDED then
              reason = 'skipped: dependency ' .. done .. ' ended ' .. NAME[ended]
            else
              reason = 'cancelled: dependency ' .. done .. ' ended ' .. NAME[ended]
            end
            push_event(t, PENDING, to, nil, reason, keep)
            t.s = to
            if to == QUEUED then
              -- Its own delay counts from now, when it became ready.
              t.r = NOW + delay
              local delayed = t.r > NOW
              file(t, id, delayed and fmt(t.r), delayed)
              queued = queued + 1
            else
              t.f = NOW
              t.fl = bor(t.fl, F_FINISHED)
              finished(t, id, retention)
              step_ended(id, to)
            end
            put_m(id, mk(t))
            tally(PENDING, t.k, -1)
            tally(to, t.k, 1)
          end
        end
      end
    end
  end
  STEP_DONE = {}
  return queued
end

-- The end of a call that settled jobs: write what was gathered, wake idle claims when jobs
-- went back to their queue, sweep expired records.
local function settled(requeued, sweep_limit)
  flush()
  if requeued > 0 then redis.call('PUBLISH', P .. ':wake', requeued) end
  sweep(sweep_limit)
end

-- Where each finish code takes a running job.
local TARGET = {ok = SUCCEEDED, retry = QUEUED, defer = QUEUED, release = QUEUED, dead = DEAD, cancel = CANCELLED}

-- Finish the running job t (id), whose claim the caller checked: code ok|retry|defer|dead|
-- cancel|release, delay (us, for retry and defer, from this server's clock), text (the
-- result, error or reason). A cancel asked for while the job ran wins over putting it back.
-- Writes the record (gathered for the flush), files or retires the job, counts it. Returns
-- the state it moved to and the new m.
local function settle_held(t, id, code, delay, text, worker, keep, retention, dead_keep)
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
    t.r = NOW + tonumber(delay); score = fmt(t.r)
    t.le = text; t.fl = bor(t.fl, F_LE)
    reason = text
    -- A running total of retries, beside the counts (`StateCounts::retried`).
    tallies.retried = (tallies.retried or 0) + 1
  elseif code == 'defer' then
    t.r = NOW + tonumber(delay); score = fmt(t.r)
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
  else
    t.f = NOW
    t.fl = bor(t.fl, F_FINISHED)
    if to == DEAD then finished(t, id, dead_keep) else finished(t, id, retention) end
    if has(t.fl, F_STEP) then step_ended(id, to) end
  end
  local nm = mk(t)
  put_m(id, nm)
  tally(RUNNING, t.k, -1)
  tally(to, t.k, 1)
  return to, nm
end

-- Waiting jobs of queue q that came due, at most `max` of them, join the tail of their lane.
local function promote(q, max)
  local wk = wait_key(q)
  local due_ids = redis.call('ZRANGEBYSCORE', wk, '-inf', SNOW, 'LIMIT', 0, max)
  if #due_ids > 0 then
    local wm = hmget(P .. ':m', due_ids)
    for j, id in ipairs(due_ids) do
      local m = wm[j]
      zrem(wk, id)
      if m and string.byte(m, 1) == QUEUED then
        local t = unm(m)
        unfile(t, id)
        file(t, id, nil, false)
        put_m(id, mk(t))
      end
    end
    flush()
  end
end
