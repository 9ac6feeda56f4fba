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
-- Job fields: d (JSON: payload, tags, strategy, timeout), k kind, q queue, tn tenant,
--   ik idempotency key, p priority, ma max attempts, ca created, s state, v version,
--   a attempt, r run_at, u updated, st started, f finished, res result, le last error,
--   o lease owner, x lease expiry, cr cancel requested; events e1, e<eo>..e<en> (times in us).
local P = KEYS[1]
local CHUNK = 500
local RF = {'d', 'k', 'q', 'tn', 'ik', 'p', 'ma', 'ca', 's', 'v', 'a', 'r', 'u', 'st', 'f',
            'res', 'le', 'o', 'x', 'cr', 'en', 'eo'}
local F = {}
for i, f in ipairs(RF) do F[f] = i end

local function fmt(n) return string.format('%.0f', n) end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function job_key(id) return P .. ':j:' .. id end

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
local function tally(state, kind, delta)
  local f = state .. ':' .. kind
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
        rem[m[1]] = rem[m[1]] or {}
        table.insert(rem[m[1]], id)
      end
      if m[2] then
        add[m[2]] = add[m[2]] or {}
        local l = add[m[2]]
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

-- A transition's history entry: "<at>|<from>|<to>|<attempt>|<worker length>|<worker><+reason or ->"
-- Keeps the first transition and the latest ones, `keep` in all.
local function push_event(w, h, at, from, to, attempt, worker, reason, keep)
  local en = tonumber(h[F.en] or '0') + 1
  local eo = tonumber(h[F.eo] or '2')
  local wpart
  if worker then wpart = #worker .. '|' .. worker else wpart = '-1|' end
  local rpart
  if reason then rpart = '+' .. reason else rpart = '-' end
  w[#w + 1] = 'e' .. en
  w[#w + 1] = fmt(at) .. '|' .. from .. '|' .. to .. '|' .. attempt .. '|' .. wpart .. rpart
  w[#w + 1] = 'en'
  w[#w + 1] = tostring(en)
  local dropped = nil
  if en >= eo and 1 + (en - eo + 1) > keep then
    dropped = 'e' .. eo
    eo = eo + 1
  end
  w[#w + 1] = 'eo'
  w[#w + 1] = tostring(eo)
  return dropped
end

-- A job reached a terminal state: it expires `keep_us` from now. The sweep removes it from
-- the indexes and counts; PEXPIRE is the backstop should no sweep run for a long time.
local done_list = {}
local function finished(id, key, h, to, now, keep_us)
  done_list[#done_list + 1] = fmt(now + keep_us)
  done_list[#done_list + 1] = id .. LETTER[to] .. h[F.k]
  local ttl = math.floor(keep_us / 1000) + 3600000
  redis.call('PEXPIRE', key, ttl)
  if h[F.ik] then redis.call('PEXPIRE', P .. ':ik:' .. h[F.ik], ttl) end
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

local function hget_record(key)
  local args = {'HMGET', key}
  for i, f in ipairs(RF) do args[i + 2] = f end
  return redis.call(unpack(args))
end

-- A record as returned to the client: id, then the RF fields (false -> nil).
local function record(id, h)
  local out = {id}
  for i = 1, #RF do out[i + 1] = h[i] end
  return out
end
