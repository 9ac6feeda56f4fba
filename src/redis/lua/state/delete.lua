-- ARGV: id. Deletes a finished job that is not a workflow step now, rather than when its
-- retention ends: its record, progress, indexes, count and idempotency key (while the key
-- names it). Its entry in a retention list stays, to be passed over by the sweep (the id
-- goes in the set DELETED until then). Returns {'deleted'} | {'not_finished', state} |
-- {'step'} | {'missing'}.
local id = ARGV[1]
local m = redis.call('HGET', P .. ':m', id)
if not m then return {'missing'} end
local t = unm(m)
if t.s ~= SUCCEEDED and t.s ~= DEAD and t.s ~= CANCELLED then
  return {'not_finished', NAME[t.s]}
end
if has(t.fl, F_STEP) then return {'step'} end
redis.call('SADD', DELETED, id)
redis.call('HDEL', P .. ':m', id)
redis.call('HDEL', P .. ':d', id)
redis.call('HDEL', P .. ':prog', id)
zrem(kind_key(t.k), id)
if STATE_INDEX[t.s] then zrem(STATE_INDEX[t.s], id) end
tally(t.s, t.k, -1)
if t.ik ~= '' and redis.call('GET', P .. ':ik:' .. t.ik) == id then
  redis.call('DEL', P .. ':ik:' .. t.ik)
end
flush()
if redis.call('EXISTS', kind_key(t.k)) == 0 then redis.call('SREM', P .. ':kinds', t.k) end
return {'deleted'}
