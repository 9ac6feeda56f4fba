-- ARGV: consumer, max, lease (ms), promote limit, reclaim every (ms), max lane wait (ms; 0 off).
-- 1. moves due delayed jobs into their lanes (at most `promote limit`, earliest first);
-- 2. now and then, reclaims leases idle longer than `lease` with XAUTOCLAIM;
-- 3. serves lanes whose oldest ready entry waited longer than `max lane wait` (anti-starvation);
-- 4. serves the rest in strict priority order, highest first.
-- Returns {leases (flat, see deliver), ms until the next delayed job is due (-1: none),
--          entry ids XAUTOCLAIM reported deleted, lanes}.
local consumer = ARGV[1]
local max = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local promote_limit = tonumber(ARGV[4])
local reclaim_every = tonumber(ARGV[5])
local max_wait = tonumber(ARGV[6])
local now = now_us()
local now_ms = math.floor(now / 1000)

-- 1. Promote.
local due = redis.call('ZRANGEBYSCORE', D, '-inf', fmt(now), 'LIMIT', 0, promote_limit)
if #due > 0 then
  local metas = hmget(M, due)
  local writes = {}
  for i, id in ipairs(due) do
    local m = metas[i]
    if m then
      local eid, tok, pri, att, rat, kind = parse(m)
      if eid == '' then
        eid = add_ready(id, pri)
        count('d', kind, -1)
        count('n', kind, 1)
        writes[#writes + 1] = id
        writes[#writes + 1] = meta(eid, '0', pri, att, rat, kind)
      end
    end
  end
  chunked({'HSET', M}, writes)
  chunked({'ZREM', D}, due)
end

local lanes = redis.call('ZREVRANGE', L, 0, -1)
local entries = {}
local need = max
local deleted = {}

-- 2. Reclaim expired leases: on every call, those whose lease (P:lx, exact per delivery)
-- ran out, claimed with XCLAIM (one ZRANGEBYSCORE when none did, so whatever lease the
-- caller asked for, a short lease is taken over on time); now and then, with XAUTOCLAIM
-- looping on its cursor, entries pending longer than `lease` that were never turned into a
-- lease (a blocking read whose reader died before adopting them).
do
  local expired = redis.call('ZRANGEBYSCORE', LX, '-inf', fmt(now_ms), 'LIMIT', 0, need)
  if #expired > 0 then
    local metas = hmget(M, expired)
    local stale = {}
    local writes = {}
    for i, id in ipairs(expired) do
      local m = metas[i]
      if m then
        local eid, tok, pri, att, rat, kind = parse(m)
        if eid ~= '' then
          local r = redis.call('XCLAIM', lane_key(pri), G, consumer, 0, eid)
          if type(r[1]) == 'table' and type(r[1][2]) == 'table' then
            entries[#entries + 1] = {pri, eid, id}
            need = need - 1
          elseif #redis.call('XRANGE', lane_key(pri), eid, eid) > 0 then
            -- In the stream but not pending (its group was recreated): make it ready again.
            remove_entry(pri, eid)
            writes[#writes + 1] = id
            writes[#writes + 1] = meta(add_ready(id, pri), '0', pri, att, rat, kind)
            count('f', kind, -1)
          else
            -- The entry is gone (trimmed, or lost in a restart): forget it, so the
            -- reconciler can enqueue the job again from state.
            deleted[#deleted + 1] = pri .. ':' .. eid
            stale[#stale + 1] = id
            count('n', kind, -1)
            count('f', kind, -1)
          end
        end
      end
    end
    chunked({'ZREM', LX}, expired)
    chunked({'HDEL', M}, stale)
    chunked({'HSET', M}, writes)
  end
end
local rc = P .. ':rc'
if now_ms >= tonumber(redis.call('GET', rc) or '0') then
  redis.call('SET', rc, fmt(now_ms + reclaim_every))
  for _, pri in ipairs(lanes) do
    if need <= 0 then break end
    local cursor = '0-0'
    local rounds = 0
    repeat
      local r = redis.pcall('XAUTOCLAIM', lane_key(pri), G, consumer, lease_ms, cursor, 'COUNT', need)
      if type(r) ~= 'table' or r.err then break end
      cursor = r[1]
      for _, e in ipairs(r[2]) do
        if type(e) == 'table' and type(e[2]) == 'table' and e[2][2] then
          entries[#entries + 1] = {pri, e[1], e[2][2], true}
        end
      end
      if r[3] then
        for _, d in ipairs(r[3]) do deleted[#deleted + 1] = pri .. ':' .. d end
      end
      rounds = rounds + 1
    until cursor == '0-0' or rounds >= 4
  end
end

local function read(pri, count_)
  if count_ <= 0 then return end
  local key = lane_key(pri)
  local r = redis.pcall('XREADGROUP', 'GROUP', G, consumer, 'COUNT', count_, 'STREAMS', key, '>')
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'NOGROUP', 1, true) then
      -- The stream or its group is gone (a restart, a flush): recreate it and read again.
      redis.pcall('XGROUP', 'CREATE', key, G, '0', 'MKSTREAM')
      r = redis.call('XREADGROUP', 'GROUP', G, consumer, 'COUNT', count_, 'STREAMS', key, '>')
    else
      error(r.err)
    end
  end
  if not r then return end
  for _, e in ipairs(r[1][2]) do
    if type(e[2]) == 'table' and e[2][2] then
      entries[#entries + 1] = {pri, e[1], e[2][2]}
      need = need - 1
    else
      remove_entry(pri, e[1])
    end
  end
end

-- 3. Anti-starvation: now and then, serve lanes below the top whose oldest ready entry has
-- waited longer than `max_wait`, a quarter of the batch each, before the strict pass.
local ag = P .. ':ag'
if max_wait > 0 and #lanes > 1 and need > 0 and now_ms >= tonumber(redis.call('GET', ag) or '0') then
  redis.call('SET', ag, fmt(now_ms + math.min(math.max(math.floor(max_wait / 4), 10), 1000)))
  for i = 2, #lanes do
    if need <= 0 then break end
    local key = lane_key(lanes[i])
    local info = redis.pcall('XINFO', 'GROUPS', key)
    if type(info) == 'table' and not info.err then
      for _, g in ipairs(info) do
        local name, last
        for k = 1, #g, 2 do
          if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then last = g[k + 1] end
        end
        if name == G and last then
          local head = redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', 1)
          if #head > 0 then
            local ms = tonumber(string.match(head[1][1], '^(%d+)'))
            if ms and now_ms - ms > max_wait then
              read(lanes[i], math.min(need, math.max(1, math.floor(max / 4))))
            end
          end
        end
      end
    end
  end
end

-- 4. Strict priority.
for _, pri in ipairs(lanes) do
  if need <= 0 then break end
  read(pri, need)
end

local out = deliver(entries, now_ms + lease_ms)
flush_removals()
flush_counts()
local next_due = -1
local first = redis.call('ZRANGE', D, 0, 0, 'WITHSCORES')
if #first > 0 then
  next_due = math.max(0, math.floor((tonumber(first[2]) - now) / 1000))
end
return {out, next_due, deleted, lanes}
