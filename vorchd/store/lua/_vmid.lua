-- Prepended to every script that changes state (see vorchd/store/scripts.py).
-- new_vmid(counter_key, block_key): the next vmid from the counter P:vmid, or nil when
-- the ids it may hand out are used up and a new block must be made durable first
-- (lua/vmid_reserve.lua, vorchd/store/vmids.py; why: vorchd/store/keys.py). Ids are
-- handed out only below the block's ceiling, and only in the Redis run (its run_id)
-- that made that ceiling durable: after a restart the counter may have come back lower
-- than an id it gave, and lua/vmid_reserve.lua moves it past them first.
local function redis_run()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end

local function new_vmid(counter_key, block_key)
  local block = redis.call('HMGET', block_key, 'run', 'ceiling')
  local counter = tonumber(redis.call('GET', counter_key) or '0')
  if block[1] ~= redis_run() or counter >= tonumber(block[2] or '0') then return nil end
  return redis.call('INCR', counter_key)
end
