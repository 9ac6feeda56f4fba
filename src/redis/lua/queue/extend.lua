-- Heartbeat. ARGV: consumer, lease (ms), then groups of 6 (see `held`).
-- Resets the idle time of each delivery still held (XCLAIM ... JUSTID, which does not count
-- a delivery). Returns 1/0 per group.
local consumer = ARGV[1]
local t = redis.call('TIME')
local expires = fmt(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2]))
local ok = {}
local n = 0
for _ = 3, #ARGV, 6 do n = n + 1; ok[n] = 0 end
local by_lane = {}
local leases = {}
for _, h in ipairs(held(3, 6)) do
  ok[h[1]] = 1
  leases[#leases + 1] = expires
  leases[#leases + 1] = h[2]
  local list = by_lane[h[3]]
  if not list then list = {}; by_lane[h[3]] = list end
  list[#list + 1] = h[4]
end
for pri, list in pairs(by_lane) do
  local i = 1
  while i <= #list do
    local last = math.min(i + CHUNK - 1, #list)
    local args = {'XCLAIM', lane_key(pri), G, consumer, 0}
    for k = i, last do args[#args + 1] = list[k] end
    args[#args + 1] = 'JUSTID'
    redis.call(unpack(args))
    i = last + 1
  end
end
chunked({'ZADD', LX}, leases)
return ok
