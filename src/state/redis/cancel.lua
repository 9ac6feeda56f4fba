-- ARGV: id, reason, events kept, retention (us). Returns {'cancelled'} | {'requested'}
-- | {'finished', state} | {'missing'}.
local id, reason, keep, retention = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_us()
local snow = fmt(now)
local key = job_key(id)
local h = redis.call('HMGET', key, 'k', 'm', 'ik')
if not h[2] then return {'missing'} end
local t = unm(h[2])
local s = t.s
t.v = t.v + 1
t.u = now
if s == 'queued' then
  local w = {'HSET', key}
  local dropped = push_event(w, t, snow, 'queued', 'cancelled', t.a, nil, reason, keep)
  t.s = 'cancelled'
  t.f = now
  w[#w + 1] = 'm'; w[#w + 1] = mk(t)
  redis.call(unpack(w))
  if dropped then redis.call('HDEL', key, dropped) end
  move(id, 'queued', 'cancelled')
  tally('queued', h[1], -1)
  tally('cancelled', h[1], 1)
  finished(id, key, h[1], h[3], 'cancelled', now, retention)
  flush_moves()
  flush_tallies()
  flush_done()
  return {'cancelled'}
elseif s == 'running' then
  t.cr = true
  redis.call('HSET', key, 'm', mk(t))
  return {'requested'}
end
return {'finished', s}
