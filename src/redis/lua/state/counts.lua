-- ARGV: sweep limit. Drops expired records, then returns {how many went, counts (flat)}.
local swept = sweep(tonumber(ARGV[1]))
return {swept, redis.call('HGETALL', P .. ':c')}
