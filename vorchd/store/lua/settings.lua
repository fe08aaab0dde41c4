-- Change the live settings (policy, overcommit ratios), shared by every daemon.
-- KEYS[1]  P:settings      the live values
-- KEYS[2]  P:settings:ini  the ini's values as last read
-- ARGV[1]  the key prefix P;  ARGV[2] 'ini' or 'admin';  ARGV[3..] field, value pairs
-- With 'ini' (start-up), a value is taken only where the ini changed since it was last
-- read (an operator edited it); an admin's change is kept otherwise. With 'admin', every
-- value given is taken.
-- Returns {settings hash, seq}. Change: op "settings", {settings hash}.
for i = 3, #ARGV, 2 do
  if ARGV[2] == 'admin' then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  elseif redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
local live = redis.call('HGETALL', KEYS[1])
return {live, emit(ARGV[1], 'settings', live)}
