-- ARGV: id, reason, events kept, retention (us). Returns {'cancelled'} | {'requested'}
-- | {'finished', state} | {'missing'}.
local id, reason, keep, retention = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local m = redis.call('HGET', P .. ':m', id)
if not m then return {'missing'} end
local t = unm(m)
local s = t.s
if s == QUEUED or s == PENDING then
  t.v = t.v + 1
  t.u = NOW
  if s == QUEUED then unfile(t, id) else redis.call('HDEL', P .. ':wf:s', id) end
  push_event(t, s, CANCELLED, nil, reason, keep)
  t.s = CANCELLED
  t.f = NOW
  t.fl = bor(t.fl, F_FINISHED)
  put_m(id, mk(t))
  tally(s, t.k, -1)
  tally(CANCELLED, t.k, 1)
  finished(t, id, retention)
  if has(t.fl, F_STEP) then step_ended(id, CANCELLED) end
  local queued = settle_steps(keep, retention)
  flush()
  if queued > 0 then redis.call('PUBLISH', P .. ':wake', queued) end
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
