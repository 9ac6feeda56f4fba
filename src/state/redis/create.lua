-- ARGV: groups of 8: id, idempotency key ('' none), kind, state, d, m, result ('' none),
-- last error ('' none). Returns per job {'new', id} or {'existing', id}.
local out = {}
local all, kinds = {}, {}
for i = 1, #ARGV, 8 do
  local id, ik, kind, state = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = job_key(id)
  local existing = nil
  if ik ~= '' then
    if not redis.call('SET', P .. ':ik:' .. ik, id, 'NX') then
      existing = redis.call('GET', P .. ':ik:' .. ik)
    end
  end
  if not existing and redis.call('EXISTS', key) == 1 then existing = id end
  if existing then
    out[#out + 1] = {'existing', existing}
  else
    if ik ~= '' then
      redis.call('HSET', key, 'd', ARGV[i + 4], 'k', kind, 'm', ARGV[i + 5], 'ik', ik)
    else
      redis.call('HSET', key, 'd', ARGV[i + 4], 'k', kind, 'm', ARGV[i + 5])
    end
    if ARGV[i + 6] ~= '' then redis.call('HSET', key, 'res', ARGV[i + 6]) end
    if ARGV[i + 7] ~= '' then redis.call('HSET', key, 'le', ARGV[i + 7]) end
    all[#all + 1] = '0'
    all[#all + 1] = id
    local l = kinds[kind]
    if not l then l = {}; kinds[kind] = l end
    l[#l + 1] = '0'
    l[#l + 1] = id
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
