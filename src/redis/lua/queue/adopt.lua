-- After a blocking XREADGROUP outside Lua: turn what it delivered into leases.
-- ARGV: lease (ms), then groups of 3: priority, entry id, job id. Returns leases as
-- `deliver` does.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entries = {}
for i = 2, #ARGV, 3 do entries[#entries + 1] = {ARGV[i], ARGV[i + 1], ARGV[i + 2]} end
local out = deliver(entries, now_ms + tonumber(ARGV[1]))
flush_removals()
flush_counts()
return out
