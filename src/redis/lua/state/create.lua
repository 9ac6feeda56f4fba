-- ARGV: groups of 8: id, idempotency key ('' none), kind, queue, priority, delay (us: the
-- submitter's run_at minus its created_at, may be negative), d, m.
-- Stores new queued jobs, due `delay` from this server's clock (so a submitter whose clock is
-- off neither delays nor hastens them), and files them in their lanes.
-- Returns, flat, per job: 'new', id or 'existing', id (the holder of the key).
local out, n_out = {}, 0
local ids = {}
for i = 1, #ARGV, 8 do ids[(i + 7) / 8] = ARGV[i] end
local have = hmget(P .. ':m', ids)
local dflat, n_d = {}, 0
local filed = 0
local kinds = {}
for j, id in ipairs(ids) do
  local i = (j - 1) * 8 + 1
  local ik = ARGV[i + 1]
  local existing = nil
  -- (an id met twice in this call: its first record waits in M_OUT)
  if have[j] or M_OUT[id] then existing = id end
  if not existing and ik ~= '' then
    if not redis.call('SET', P .. ':ik:' .. ik, id, 'NX') then
      existing = redis.call('GET', P .. ':ik:' .. ik)
    end
  end
  if existing then
    out[n_out + 1] = 'existing'
    out[n_out + 2] = existing
    n_out = n_out + 2
  else
    local kind = ARGV[i + 2]
    local t = T
    t.q, t.pr, t.k, t.fl = ARGV[i + 3], tonumber(ARGV[i + 4]), kind, 0
    dflat[n_d + 1] = id
    dflat[n_d + 2] = ARGV[i + 6]
    n_d = n_d + 2
    queue_new(t, id, ARGV[i + 7], tonumber(ARGV[i + 5]))
    zadd(kind_key(kind), '0', id)
    kinds[kind] = true
    filed = filed + 1
    out[n_out + 1] = 'new'
    out[n_out + 2] = id
    n_out = n_out + 2
  end
end
store_created(dflat, kinds, filed)
return out
