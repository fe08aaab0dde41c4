-- The current items of a kind (flavors, images) with their hashes, in one round trip:
-- {id, {field, value, ...}} each, in order; with ARGV[2], only that id if it is current.
-- Read-only. KEYS[1] P:<kind>:active.  ARGV[1] P:<kind> (the items' key prefix) [, one id]
local out = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if ARGV[2] == nil or id == ARGV[2] then
    table.insert(out, {id, redis.call('HGETALL', ARGV[1] .. ':' .. id)})
  end
end
return out
