-- Batch helpers, prepended to every queue and state script (before its own common part).
-- No command gets more than CHUNK items: Lua's unpack fails past about 8,000 values, and
-- smaller commands keep Redis responsive to other clients.
local CHUNK = 500

-- Run `head..., items[i]...` in calls of at most CHUNK items.
local function chunked(head, items)
  local n = #items
  local i = 1
  while i <= n do
    local last = math.min(i + CHUNK - 1, n)
    local args = {unpack(head)}
    local h = #args
    for k = i, last do args[h + k - i + 1] = items[k] end
    redis.call(unpack(args))
    i = last + 1
  end
end

-- HMGET of many fields of one hash, CHUNK at a time; returns index -> value (false when
-- absent).
local function hmget(key, fields)
  local out = {}
  local n = #fields
  local i = 1
  while i <= n do
    local last = math.min(i + CHUNK - 1, n)
    local got = redis.call('HMGET', key, unpack(fields, i, last))
    for k = 1, #got do out[i + k - 1] = got[k] end
    i = last + 1
  end
  return out
end

-- Append `v` to the list `t[k]`, making the list on first use (gathering items per key to
-- send in bulk). The lists' lengths are kept aside: `#` on a growing table costs a search.
local APPEND_N = {}
local function append(t, k, v)
  local l = t[k]
  local n = 0
  if l then n = APPEND_N[l] else l = {}; t[k] = l end
  n = n + 1
  l[n] = v
  APPEND_N[l] = n
end
