-- Reserve the next block of vmids (see vorchd/store/keys.py): the first step, before
-- the caller makes it durable and then lets claims use it (lua/vmid_ceiling.lua).
-- KEYS[1] P:vmid (the counter)  KEYS[2] P:vmid:block (run, reserved, ceiling)
-- ARGV[1] the key prefix P;  ARGV[2] the block's size
-- Returns {reserved, run}: the block's end and this Redis run's id, to make durable and
-- pass to lua/vmid_ceiling.lua; reserved is 0 when ids can be handed out already.
local run = redis_run()
local block = redis.call('HMGET', KEYS[2], 'run', 'reserved', 'ceiling')
local counter = tonumber(redis.call('GET', KEYS[1]) or '0')
local reserved = tonumber(block[2] or '0')
if block[1] ~= run then
  -- Redis restarted since the ceiling was made durable: it may have lost the end of
  -- its AOF (a machine crash), so the counter may be below ids it handed out, but
  -- none of those is above the durable reservation. Move the counter past them all.
  if reserved > counter then
    counter = reserved
    redis.call('SET', KEYS[1], counter)
  end
  redis.call('HSET', KEYS[2], 'run', run, 'ceiling', counter)
elseif counter < tonumber(block[3] or '0') then
  return {0, run}
end
-- A reservation another caller made and is making durable is shared, not doubled.
if reserved <= counter then
  reserved = counter + tonumber(ARGV[2])
  redis.call('HSET', KEYS[2], 'reserved', reserved)
end
return {reserved, run}
