-- ARGV: worker, lease (us), then job ids. Returns per id: 'held', 'cancel' or 'lost'.
local worker, lease = ARGV[1], tonumber(ARGV[2])
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
local ms = hmget(P .. ':m', ids)
local score = fmt(NOW + lease)
local out = {}
for j, id in ipairs(ids) do
  local m = ms[j]
  local t = m and unm(m)
  if t and t.s == RUNNING and t.o == worker then
    t.x = NOW + lease
    put_m(id, mk(t))
    leased(t.q, id)
    if has(t.fl, F_CANCEL) then out[#out + 1] = 'cancel' else out[#out + 1] = 'held' end
  else
    out[#out + 1] = 'lost'
  end
end
flush()
flush_leases(score)
return out
