-- Shared by every queue script (prepended to each). KEYS[1] is the queue's key prefix,
-- `{<namespace>:<queue>}`: every key below carries that hash tag, so all keys of one queue
-- live in one Redis Cluster slot.
--
-- Keys:  P:lanes    ZSET  priority lanes in use (member and score = priority)
--        P:s:<pri>  STREAM one per lane; entries hold the job id in field `j`; group `jobforge`
--        P:delayed  ZSET  job id -> run_at (microseconds)
--        P:m        HASH  job id -> "<entry id>|<token>|<priority>|<attempt>|<run_at us>|<kind>"
--                         (entry id empty while delayed; token 0 until delivered)
--        P:c        HASH  counters per kind: "n|k" in streams, "f|k" leased, "d|k" delayed, "x|k" dead
--        P:dead     STREAM dead letters (j, k, a, r = reason, t = time)
--        P:lx       ZSET  job id -> lease expiry (ms) of its current delivery
--        P:seq      STRING delivery token sequence
--        P:rc, P:ag STRING next time (ms) to look for expired leases / starving lanes
local P = KEYS[1]
local G = 'jobforge'
local M = P .. ':m'
local C = P .. ':c'
local D = P .. ':delayed'
local L = P .. ':lanes'
local LX = P .. ':lx'

local function fmt(n) return string.format('%.0f', n) end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function lane_key(pri) return P .. ':s:' .. pri end

local function parse(m)
  return string.match(m, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
end

local function meta(eid, tok, pri, att, rat, kind)
  return eid .. '|' .. tok .. '|' .. pri .. '|' .. att .. '|' .. rat .. '|' .. kind
end

local counts = {}
local function count(what, kind, delta)
  local f = what .. '|' .. kind
  counts[f] = (counts[f] or 0) + delta
end
local function flush_counts()
  for f, d in pairs(counts) do
    if d ~= 0 then
      if redis.call('HINCRBY', C, f, d) == 0 then redis.call('HDEL', C, f) end
    end
  end
  counts = {}
end

local known_lanes = {}
local function ensure_lane(pri)
  if known_lanes[pri] then return end
  if redis.call('ZADD', L, 'NX', pri, pri) == 1 then
    -- A new lane: its stream and group (BUSYGROUP, if they exist, is fine).
    redis.pcall('XGROUP', 'CREATE', lane_key(pri), G, '0', 'MKSTREAM')
  end
  known_lanes[pri] = true
end

-- Per-lane lists of entry ids to XACK + XDEL, flushed at the end.
local removals = {}
local function remove_entry(pri, eid) append(removals, pri, eid) end
local function flush_removals()
  for pri, list in pairs(removals) do
    chunked({'XACK', lane_key(pri), G}, list)
    chunked({'XDEL', lane_key(pri)}, list)
  end
  removals = {}
end

-- Make a stream entry ready for delivery now.
local function add_ready(id, pri)
  ensure_lane(pri)
  return redis.call('XADD', lane_key(pri), '*', 'j', id)
end

-- Turn delivered entries {pri, eid, id, only_fresh} into leases expiring at `expires` (ms):
-- check each against the job's metadata (an entry the metadata does not point at is an
-- orphan: removed), give each a fresh token, index its expiry, and count newly leased ones.
-- With `only_fresh`, entries already leased (token not 0) are left alone: their lease is
-- tracked in P:lx, whoever owns them in the pending list.
-- Returns a flat list: id, pri, eid, token, attempt, run_at, kind.
local function deliver(entries, expires)
  local out = {}
  if #entries == 0 then return out end
  local ids = {}
  for i, e in ipairs(entries) do ids[i] = e[3] end
  local metas = hmget(M, ids)
  local base = redis.call('INCRBY', P .. ':seq', #entries) - #entries
  local writes = {}
  local leases = {}
  for i, e in ipairs(entries) do
    local m = metas[i]
    local eid, tok, pri, att, rat, kind
    if m then eid, tok, pri, att, rat, kind = parse(m) end
    if not m or eid ~= e[2] or pri ~= e[1] then
      remove_entry(e[1], e[2])
    elseif not (e[4] and tok ~= '0') then
      local token = fmt(base + i)
      if tok == '0' then count('f', kind, 1) end
      writes[#writes + 1] = e[3]
      writes[#writes + 1] = meta(eid, token, pri, att, rat, kind)
      leases[#leases + 1] = fmt(expires)
      leases[#leases + 1] = e[3]
      out[#out + 1] = e[3]; out[#out + 1] = pri; out[#out + 1] = eid; out[#out + 1] = token
      out[#out + 1] = att; out[#out + 1] = rat; out[#out + 1] = kind
    end
  end
  chunked({'HSET', M}, writes)
  chunked({'ZADD', LX}, leases)
  return out
end

-- Look up leases given as ARGV groups starting at `from`, `width` wide: id, priority, entry
-- id, the job's metadata as that delivery left it, kind, attempt, ... A lease is held while
-- the metadata is exactly that (same entry, same token): no parsing needed.
-- Returns the list of {index, id, pri, eid, attempt, kind, base} still held.
local function held(from, width)
  local ids = {}
  local n = 0
  for i = from, #ARGV, width do n = n + 1; ids[n] = ARGV[i] end
  local metas = hmget(M, ids)
  local out = {}
  for k = 1, n do
    local b = from + (k - 1) * width
    if metas[k] == ARGV[b + 3] then
      out[#out + 1] = {k, ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 5], ARGV[b + 4], b}
    end
  end
  return out
end
