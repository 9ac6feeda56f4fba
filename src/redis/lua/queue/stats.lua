-- Read-only counts: {ready, in flight, delayed, dead, counters (flat field/value)}.
local ready, inflight = 0, 0
for _, pri in ipairs(redis.call('ZRANGE', L, 0, -1)) do
  local key = lane_key(pri)
  local len = redis.call('XLEN', key)
  local pending = 0
  local p = redis.pcall('XPENDING', key, G)
  if type(p) == 'table' and not p.err then pending = tonumber(p[1]) or 0 end
  ready = ready + math.max(0, len - pending)
  inflight = inflight + pending
end
return {ready, inflight, redis.call('ZCARD', D), redis.call('XLEN', P .. ':dead'), redis.call('HGETALL', C)}
