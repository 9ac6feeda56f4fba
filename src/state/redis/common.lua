-- Shared by every state script (prepended to each). KEYS[1] is the namespace's hash tag
-- `{<namespace>}`: all state keys carry it, so multi-job scripts are cluster-safe (the state
-- of one namespace lives in one slot).
--
-- Keys:  P:j:<id>     HASH   one job (fields below)
--        P:i:all      ZSET   every retained job id (score 0, ordered by id = creation)
--        P:i:s:<st>   ZSET   ids by state;  P:i:k:<kind>  ZSET  ids by kind
--        P:c          HASH   "<state>:<kind>" -> count
--        P:done       ZSET   "<id><state letter><kind>" -> time (us) the record expires
--        P:ik:<key>   STRING idempotency key -> job id
-- Job fields: d   JSON of what never changes (payload, queue, priority, tags, tenant, ...)
--             k   kind;  ik  idempotency key;  res  result;  le  last error
--             m   what changes, packed in one string (see `unm`)
--             e1, e<oldest kept>..e<last>   history (the first transition and the latest)
local P = KEYS[1]
local CHUNK = 500

local function fmt(n) return string.format('%.0f', n) end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function job_key(id) return P .. ':j:' .. id end

-- m <-> table. m is packed (struct, little-endian), so reading and writing it is one C call:
-- state code (B: 1 queued, 2 running, 3 succeeded, 4 dead, 5 cancelled), flags (B: 1 started,
-- 2 finished, 4 lease expiry, 8 cancel requested), version (d), attempt (I), max attempts (I),
-- run_at, updated, started, finished, lease expiry (d, us), last event (I), oldest kept
-- event (I), owner (I length + bytes).
local M_FORMAT = '<BBdIIdddddIIIc0'
local NAME = {'queued', 'running', 'succeeded', 'dead', 'cancelled'}
local CODE = {queued = 1, running = 2, succeeded = 3, dead = 4, cancelled = 5}
local function unm(m)
  local s, fl, v, a, ma, r, u, st, f, x, en, eo, o = struct.unpack(M_FORMAT, m)
  local t = {s = NAME[s], v = v, a = a, ma = ma, r = r, u = u, en = en, eo = eo, o = o,
             cr = fl >= 8}
  if fl % 2 == 1 then t.st = st end
  if fl % 4 >= 2 then t.f = f end
  if fl % 8 >= 4 then t.x = x end
  return t
end
local function mk(t)
  local fl = 0
  if t.st then fl = fl + 1 end
  if t.f then fl = fl + 2 end
  if t.x then fl = fl + 4 end
  if t.cr then fl = fl + 8 end
  return struct.pack(M_FORMAT, CODE[t.s], fl, t.v, t.a, t.ma, t.r, t.u, t.st or 0, t.f or 0,
    t.x or 0, t.en, t.eo, #t.o, t.o)
end

local function chunked(head, items)
  local n = #items
  local i = 1
  while i <= n do
    local args = {}
    for k = 1, #head do args[k] = head[k] end
    local last = math.min(i + CHUNK - 1, n)
    for k = i, last do args[#args + 1] = items[k] end
    redis.call(unpack(args))
    i = last + 1
  end
end

-- Counts per state and kind, flushed at the end; a count that reaches 0 is removed.
local tallies = {}
local tally_keys = {}
local function tally(state, kind, delta)
  local by_kind = tally_keys[state]
  if not by_kind then by_kind = {}; tally_keys[state] = by_kind end
  local f = by_kind[kind]
  if not f then f = state .. ':' .. kind; by_kind[kind] = f end
  tallies[f] = (tallies[f] or 0) + delta
end
local function flush_tallies()
  for f, d in pairs(tallies) do
    if d ~= 0 and redis.call('HINCRBY', P .. ':c', f, d) <= 0 then
      redis.call('HDEL', P .. ':c', f)
    end
  end
  tallies = {}
end

-- Index moves: first and last state of each id in this call, applied at the end in bulk.
local moves = {}
local move_order = {}
local function move(id, from, to)
  local m = moves[id]
  if m then m[2] = to else moves[id] = {from, to}; move_order[#move_order + 1] = id end
end
local function flush_moves()
  local rem, add = {}, {}
  for _, id in ipairs(move_order) do
    local m = moves[id]
    if m[1] ~= m[2] then
      if m[1] then
        local l = rem[m[1]]
        if not l then l = {}; rem[m[1]] = l end
        l[#l + 1] = id
      end
      if m[2] then
        local l = add[m[2]]
        if not l then l = {}; add[m[2]] = l end
        l[#l + 1] = '0'
        l[#l + 1] = id
      end
    end
  end
  for st, ids in pairs(rem) do chunked({'ZREM', P .. ':i:s:' .. st}, ids) end
  for st, ids in pairs(add) do chunked({'ZADD', P .. ':i:s:' .. st}, ids) end
  moves = {}
  move_order = {}
end

local LETTER = {succeeded = 's', dead = 'd', cancelled = 'c'}
local STATE_OF = {s = 'succeeded', d = 'dead', c = 'cancelled'}

-- Append a transition to the history in `w` (HSET arguments) and `t` (the m table):
-- "<at>|<from>|<to>|<attempt>|<worker length>|<worker><+reason or ->" (`at`: time in us, as
-- text). Keeps the first
-- transition and the latest, `keep` in all; returns the field to delete, if one fell out.
local function push_event(w, t, at, from, to, attempt, worker, reason, keep)
  local en = t.en + 1
  local eo = t.eo
  local wpart
  if worker then wpart = #worker .. '|' .. worker else wpart = '-1|' end
  local rpart
  if reason then rpart = '+' .. reason else rpart = '-' end
  w[#w + 1] = 'e' .. en
  w[#w + 1] = at .. '|' .. from .. '|' .. to .. '|' .. attempt .. '|' .. wpart .. rpart
  local dropped = nil
  if en >= eo and (en - eo + 2) > keep then
    dropped = 'e' .. eo
    eo = eo + 1
  end
  t.en = en
  t.eo = eo
  return dropped
end

-- A job reached a terminal state: it expires `keep_us` from now. The sweep removes it from
-- the indexes and counts; PEXPIRE is the backstop should no sweep run for a long time.
local done_list = {}
local done_at = {}
local function finished(id, key, kind, ik, to, now, keep_us)
  local at = done_at[keep_us]
  if not at then
    at = {fmt(now + keep_us), fmt(math.floor(keep_us / 1000) + 3600000)}
    done_at[keep_us] = at
  end
  local n = #done_list
  done_list[n + 1] = at[1]
  done_list[n + 2] = id .. LETTER[to] .. kind
  redis.call('PEXPIRE', key, at[2])
  if ik then redis.call('PEXPIRE', P .. ':ik:' .. ik, at[2]) end
end
local function flush_done()
  chunked({'ZADD', P .. ':done'}, done_list)
  done_list = {}
end

-- Drop records whose retention ran out, at most `limit` of them.
local function sweep(now, limit)
  local gone = redis.call('ZRANGEBYSCORE', P .. ':done', '-inf', fmt(now), 'LIMIT', 0, limit)
  if #gone == 0 then return 0 end
  local all, by_state, by_kind, keys = {}, {}, {}, {}
  for _, member in ipairs(gone) do
    local id = string.sub(member, 1, 36)
    local state = STATE_OF[string.sub(member, 37, 37)]
    local kind = string.sub(member, 38)
    local key = job_key(id)
    local ik = redis.call('HGET', key, 'ik')
    if ik and redis.call('GET', P .. ':ik:' .. ik) == id then
      keys[#keys + 1] = P .. ':ik:' .. ik
    end
    keys[#keys + 1] = key
    all[#all + 1] = id
    if state then
      by_state[state] = by_state[state] or {}
      table.insert(by_state[state], id)
      tally(state, kind, -1)
    end
    by_kind[kind] = by_kind[kind] or {}
    table.insert(by_kind[kind], id)
  end
  chunked({'DEL'}, keys)
  chunked({'ZREM', P .. ':i:all'}, all)
  for st, ids in pairs(by_state) do chunked({'ZREM', P .. ':i:s:' .. st}, ids) end
  for kind, ids in pairs(by_kind) do chunked({'ZREM', P .. ':i:k:' .. kind}, ids) end
  chunked({'ZREM', P .. ':done'}, gone)
  flush_tallies()
  return #gone
end

-- A record as returned to the client: {id, d, k, m, res, le}.
local function read_record(id)
  local h = redis.call('HMGET', job_key(id), 'd', 'k', 'm', 'res', 'le')
  return {id, h[1], h[2], h[3], h[4], h[5]}
end
