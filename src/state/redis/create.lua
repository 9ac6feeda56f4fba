-- ARGV: groups: id, idempotency key ('' none), kind, state, n, then n field/value pairs.
-- Returns per job {'new', id} or {'existing', id}.
local out = {}
local all, kinds = {}, {}
local i = 1
while i <= #ARGV do
  local id, ik, kind, state, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
  local first = i + 5
  i = first + 2 * n
  local existing = nil
  if ik ~= '' then
    if not redis.call('SET', P .. ':ik:' .. ik, id, 'NX') then
      existing = redis.call('GET', P .. ':ik:' .. ik)
    end
  end
  if not existing and redis.call('EXISTS', job_key(id)) == 1 then existing = id end
  if existing then
    out[#out + 1] = {'existing', existing}
  else
    local args = {'HSET', job_key(id)}
    for k = first, first + 2 * n - 1 do args[#args + 1] = ARGV[k] end
    redis.call(unpack(args))
    all[#all + 1] = '0'
    all[#all + 1] = id
    kinds[kind] = kinds[kind] or {}
    table.insert(kinds[kind], '0')
    table.insert(kinds[kind], id)
    move(id, nil, state)
    tally(state, kind, 1)
    out[#out + 1] = {'new', id}
  end
end
chunked({'ZADD', P .. ':i:all'}, all)
for kind, list in pairs(kinds) do chunked({'ZADD', P .. ':i:k:' .. kind}, list) end
flush_moves()
flush_tallies()
return out
