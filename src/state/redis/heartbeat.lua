-- ARGV: worker, lease (us), then job ids. Returns per id: 'held', 'cancel' or 'lost'.
local worker, lease = ARGV[1], tonumber(ARGV[2])
local now = now_us()
local out = {}
for i = 3, #ARGV do
  local key = job_key(ARGV[i])
  local m = redis.call('HGET', key, 'm')
  local t = m and unm(m)
  if t and t.s == 'running' and t.o == worker then
    t.x = now + lease
    redis.call('HSET', key, 'm', mk(t))
    if t.cr then out[#out + 1] = 'cancel' else out[#out + 1] = 'held' end
  else
    out[#out + 1] = 'lost'
  end
end
return out
