-- ARGV: id, reason, events kept, retention (us). Returns {'cancelled'} | {'requested'}
-- | {'finished', state} | {'missing'}.
local id, reason, keep, retention = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local m = redis.call('HGET', P .. ':m', id)
if not m then return {'missing'} end
local t = unm(m)
local s = t.s
if s == QUEUED then
  t.v = t.v + 1
  t.u = NOW
  unfile(t, id)
  push_event(t, QUEUED, CANCELLED, nil, reason, keep)
  t.s = CANCELLED
  t.f = NOW
  t.fl = bor(t.fl, F_FINISHED)
  put_m(id, mk(t))
  tally(QUEUED, t.k, -1)
  tally(CANCELLED, t.k, 1)
  finished(t, id, retention)
  flush()
  return {'cancelled'}
elseif s == RUNNING then
  t.v = t.v + 1
  t.u = NOW
  t.fl = bor(t.fl, F_CANCEL)
  put_m(id, mk(t))
  flush()
  return {'requested'}
end
return {'finished', NAME[s]}
