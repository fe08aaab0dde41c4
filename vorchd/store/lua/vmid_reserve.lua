-- Reserve the next block of vmids (see vorchd/store/keys.py): the first step, before
-- the caller makes it durable and then lets claims use it (lua/vmid_ceiling.lua).
-- KEYS[1] P:vmid (the counter)  KEYS[2] P:vmid:block (run, reserved, ceiling)
-- ARGV[1] the key prefix P;  ARGV[2] the block's size;  ARGV[3] how many ids may still
-- be left below the ceiling for a reservation to be made (0: only when none is left; a
-- reservation made ahead extends the ceiling, while claims go on taking ids below it)
-- Returns {reserved, run, ceiling}: the block's end and this Redis run's id, to make
-- durable and pass to lua/vmid_ceiling.lua, and the ceiling now; reserved is 0 when no
-- reservation is needed yet.
local run = redis_run()
local block = redis.call('HMGET', KEYS[2], 'run', 'reserved', 'ceiling')
local counter = tonumber(redis.call('GET', KEYS[1]) or '0')
local reserved = tonumber(block[2] or '0')
local ceiling = tonumber(block[3] or '0')
if block[1] ~= run then
  -- Redis restarted since the ceiling was made durable: it may have lost the end of
  -- its AOF (a machine crash), so the counter may be below ids it handed out, but
  -- none of those is above the durable reservation. Move the counter past them all.
  if reserved > counter then
    counter = reserved
    redis.call('SET', KEYS[1], counter)
  end
  ceiling = counter
  redis.call('HSET', KEYS[2], 'run', run, 'ceiling', ceiling)
elseif counter + tonumber(ARGV[3] or '0') < ceiling then
  return {0, run, ceiling}
end
-- A reservation another caller made and is making durable is shared, not doubled.
local base = math.max(counter, ceiling)
if reserved <= base then
  reserved = base + tonumber(ARGV[2])
  redis.call('HSET', KEYS[2], 'reserved', reserved)
end
return {reserved, run, ceiling}
