-- Delivery counts from the counts per state and kind, and the waiting sets by kind.
-- Returns per kind, flat: kind, queued, delayed, running, dead, ...
local after = '(' .. SNOW
local per = {}
local order = {}
local flat = redis.call('HGETALL', P .. ':c')
for i = 1, #flat, 2 do
  local state, kind = string.match(flat[i], '^(%a+):(.*)$')
  if state then
    local k = per[kind]
    if not k then k = {0, 0, 0}; per[kind] = k; order[#order + 1] = kind end
    if state == 'queued' then k[1] = tonumber(flat[i + 1])
    elseif state == 'running' then k[2] = tonumber(flat[i + 1])
    elseif state == 'dead' then k[3] = tonumber(flat[i + 1]) end
  end
end
local kinds = {}
for _, kind in ipairs(order) do
  local k = per[kind]
  kinds[#kinds + 1] = kind
  kinds[#kinds + 1] = k[1]
  kinds[#kinds + 1] = redis.call('ZCOUNT', dk_key(kind), after, '+inf')
  kinds[#kinds + 1] = k[2]
  kinds[#kinds + 1] = k[3]
end
return kinds
