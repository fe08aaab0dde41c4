-- Let claims hand out vmids up to a reservation now durable (lua/vmid_reserve.lua).
-- KEYS[1] P:vmid:block
-- ARGV[1] the key prefix P;  ARGV[2] the reservation;  ARGV[3] the Redis run that made it
-- Nothing changes if Redis restarted since (the reservation may be lost: reserve again).
-- Returns 0.
local block = redis.call('HMGET', KEYS[1], 'run', 'ceiling')
if block[1] == ARGV[3] and redis_run() == ARGV[3]
    and tonumber(ARGV[2]) > tonumber(block[2] or '0') then
  redis.call('HSET', KEYS[1], 'ceiling', ARGV[2])
end
return 0
