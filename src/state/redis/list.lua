-- ARGV: index ('all' | 's:<state>' | 'k:<kind>'), after ('' for the start), limit,
-- order ('asc' | 'desc'), scan budget, state, kind, queue, tenant filters ('' none).
-- Walks the index by id from the cursor, checking at most `budget` ids.
-- Returns {records ({id, d, m} each), next cursor or false}.
local idx = P .. ':i:' .. ARGV[1]
local after, limit, order, budget = ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local fs, fk, fq, ft = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local fcode = CODE[fs]
local items = {}
local scanned = 0
local last_scanned = nil
local last_item = nil
local more = false
local exhausted = false
local cursor = after
while not more and scanned < budget do
  local n = math.min(200, budget - scanned)
  local batch
  if order == 'desc' then
    local hi = '+'
    if cursor ~= '' then hi = '(' .. cursor end
    batch = redis.call('ZREVRANGEBYLEX', idx, hi, '-', 'LIMIT', 0, n)
  else
    local lo = '-'
    if cursor ~= '' then lo = '(' .. cursor end
    batch = redis.call('ZRANGEBYLEX', idx, lo, '+', 'LIMIT', 0, n)
  end
  if #batch == 0 then exhausted = true; break end
  local ms = hmget(P .. ':m', batch)
  local ds = hmget(P .. ':d', batch)
  for j, id in ipairs(batch) do
    local m, d = ms[j], ds[j]
    local ok = m ~= nil and m ~= false and d ~= nil and d ~= false
    if ok and fcode then ok = string.byte(m, 1) == fcode end
    if ok and (fk ~= '' or fq ~= '') then
      local t = unm(m)
      if fk ~= '' then ok = t.k == fk end
      if ok and fq ~= '' then ok = t.q == fq end
    end
    if ok and ft ~= '' then ok = cjson.decode(d).tenant == ft end
    if ok and #items == limit then more = true; break end
    scanned = scanned + 1
    last_scanned = id
    if ok then
      items[#items + 1] = {id, d, m}
      last_item = id
    end
    if scanned >= budget then break end
  end
  cursor = last_scanned or cursor
  if #batch < n and not more then exhausted = true; break end
end
local next_cursor = false
if more then
  next_cursor = last_item
elseif not exhausted and last_scanned then
  next_cursor = last_scanned
end
return {items, next_cursor}
