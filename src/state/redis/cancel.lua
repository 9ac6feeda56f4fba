-- ARGV: id, reason, events kept, retention (us). Returns {'cancelled'} | {'requested'}
-- | {'finished', state} | {'missing'}.
local id, reason, keep, retention = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_us()
local key = job_key(id)
local h = hget_record(key)
local s = h[F.s]
if not s then return {'missing'} end
local v = tonumber(h[F.v]) + 1
if s == 'queued' then
  local w = {'HSET', key}
  local dropped = push_event(w, h, now, 'queued', 'cancelled', h[F.a], nil, reason, keep)
  w[#w + 1] = 's'; w[#w + 1] = 'cancelled'
  w[#w + 1] = 'u'; w[#w + 1] = fmt(now)
  w[#w + 1] = 'f'; w[#w + 1] = fmt(now)
  w[#w + 1] = 'v'; w[#w + 1] = tostring(v)
  redis.call(unpack(w))
  if dropped then redis.call('HDEL', key, dropped) end
  move(id, 'queued', 'cancelled')
  tally('queued', h[F.k], -1)
  tally('cancelled', h[F.k], 1)
  finished(id, key, h, 'cancelled', now, retention)
  flush_moves()
  flush_tallies()
  flush_done()
  return {'cancelled'}
elseif s == 'running' then
  redis.call('HSET', key, 'cr', '1', 'u', fmt(now), 'v', tostring(v))
  return {'requested'}
end
return {'finished', s}
