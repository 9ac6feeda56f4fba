-- ARGV: index ('all' | 's:<state>' | 'k:<kind>' | 'wf:<workflow id>'), after ('' for the start), limit,
-- order ('asc' | 'desc'), scan budget, state, kind, queue, tenant, tag filters ('' none).
-- Walks the index by id from the cursor ('all' merges the indexes of every kind), checking
-- at most `budget` ids. Returns {records ({id, d, m, a pending step's countdown or false,
-- the latest progress report or false} each), next cursor or false}.
local after, limit, order, budget = ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local fs, fk, fq, ft, ftag = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local fcode = CODE[fs]
local desc = order == 'desc'
local WINDOW = 200

-- The sources, each read a window at a time from the cursor.
local sources = {}
local function source(key) sources[#sources + 1] = {key = key, items = {}, pos = 1, cursor = after, last = false} end
if ARGV[1] == 'all' then
  for _, kind in ipairs(redis.call('SMEMBERS', P .. ':kinds')) do source(kind_key(kind)) end
else
  source(P .. ':i:' .. ARGV[1])
end
local function head(src)
  if src.pos > #src.items then
    if src.last then return nil end
    local got
    if desc then
      local hi = '+'
      if src.cursor ~= '' then hi = '(' .. src.cursor end
      got = redis.call('ZREVRANGEBYLEX', src.key, hi, '-', 'LIMIT', 0, WINDOW)
    else
      local lo = '-'
      if src.cursor ~= '' then lo = '(' .. src.cursor end
      got = redis.call('ZRANGEBYLEX', src.key, lo, '+', 'LIMIT', 0, WINDOW)
    end
    src.items, src.pos, src.last = got, 1, #got < WINDOW
    if #got == 0 then return nil end
    src.cursor = got[#got]
  end
  return src.items[src.pos]
end
-- The next id in order across the sources, or nil.
local function next_id()
  local best, from = nil, nil
  for _, src in ipairs(sources) do
    local h = head(src)
    if h and (not best or (desc and h > best) or (not desc and h < best)) then
      best, from = h, src
    end
  end
  if from then from.pos = from.pos + 1 end
  return best
end

local items = {}
local scanned = 0
local last_scanned = nil
local last_item = nil
local more = false
local exhausted = false
while not more and scanned < budget do
  local n = math.min(WINDOW, budget - scanned)
  local batch = {}
  for _ = 1, n do
    local id = next_id()
    if not id then break end
    batch[#batch + 1] = id
  end
  if #batch == 0 then exhausted = true; break end
  local ms = hmget(P .. ':m', batch)
  local ds = hmget(P .. ':d', batch)
  local ps = hmget(P .. ':prog', batch)
  for j, id in ipairs(batch) do
    local m, d = ms[j], ds[j]
    local ok = m ~= nil and m ~= false and d ~= nil and d ~= false
    if ok and fcode then ok = string.byte(m, 1) == fcode end
    if ok and (fk ~= '' or fq ~= '') then
      local t = unm(m)
      if fk ~= '' then ok = t.k == fk end
      if ok and fq ~= '' then ok = t.q == fq end
    end
    if ok and (ft ~= '' or ftag ~= '') then
      local blob = cjson.decode(d)
      if ft ~= '' then ok = blob.tenant == ft end
      if ok and ftag ~= '' then
        ok = false
        for _, tag in ipairs(blob.tags or {}) do
          if tag == ftag then ok = true; break end
        end
      end
    end
    if ok and #items == limit then more = true; break end
    scanned = scanned + 1
    last_scanned = id
    if ok then
      local countdown = false
      if string.byte(m, 1) == PENDING then countdown = redis.call('HGET', P .. ':wf:s', id) end
      items[#items + 1] = {id, d, m, countdown, ps[j] or false}
      last_item = id
    end
    if scanned >= budget then break end
  end
  if #batch < n and not more then exhausted = true; break end
end
local next_cursor = false
if more then
  next_cursor = last_item
elseif not exhausted and last_scanned then
  next_cursor = last_scanned
end
return {items, next_cursor}
