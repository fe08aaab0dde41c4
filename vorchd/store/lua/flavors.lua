-- Make the flavors given the current instance types, in order (VMs keep what they got).
-- KEYS[1]  P:flavor:active  list of the current tids
-- ARGV[1]  the key prefix P;  ARGV[2..] tid, cpu, ram, disk quadruples
-- Returns seq. Change: op "flavors", {{tid, cpu, ram, disk}...}.
local out = {}
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 4 do
  local tid = ARGV[i]
  redis.call('HSET', ARGV[1] .. ':flavor:' .. tid,
    'cpu', ARGV[i + 1], 'ram', ARGV[i + 2], 'disk', ARGV[i + 3])
  redis.call('RPUSH', KEYS[1], tid)
  table.insert(out, {tonumber(tid), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]),
    tonumber(ARGV[i + 3])})
end
return emit(ARGV[1], 'flavors', out)
