-- Recreate missing lane streams and groups. ARGV: priorities. Always includes lane 0.
ensure_lane('0')
redis.pcall('XGROUP', 'CREATE', lane_key('0'), G, '0', 'MKSTREAM')
for _, pri in ipairs(ARGV) do
  ensure_lane(pri)
  redis.pcall('XGROUP', 'CREATE', lane_key(pri), G, '0', 'MKSTREAM')
end
return 1
