-- ARGV: worker, lease (us), then job ids. Returns per id: 'held', 'cancel' or 'lost'.
local worker, lease = ARGV[1], tonumber(ARGV[2])
local now = now_us()
local out = {}
for i = 3, #ARGV do
  local key = job_key(ARGV[i])
  local h = redis.call('HMGET', key, 's', 'o', 'cr')
  if h[1] == 'running' and h[2] == worker then
    redis.call('HSET', key, 'x', fmt(now + lease))
    if h[3] == '1' then out[#out + 1] = 'cancel' else out[#out + 1] = 'held' end
  else
    out[#out + 1] = 'lost'
  end
end
return out
