-- Register lines (PMs or images) under stable ids: a known line keeps its id, a new one
-- gets the next, and the lines given become the current ones, in order.
-- KEYS[1]  P:<kind>:index   hash line -> id
-- KEYS[2]  P:<kind>:next    the id counter
-- KEYS[3]  P:<kind>:active  list of the current ids
-- ARGV[1]  the key prefix P;  ARGV[2] the kind (pm | image)
-- ARGV[3..] line, extra pairs (extra: a PM's URI, an image's name)
-- Returns {ids, seq}. Change: op "<kind>s", {ids, recs = {{id, hash}...}}.
local ids = {}
local recs = {}
redis.call('DEL', KEYS[3])
for i = 3, #ARGV, 2 do
  local line = ARGV[i]
  local id = redis.call('HGET', KEYS[1], line)
  if not id then
    id = redis.call('INCR', KEYS[2])
    redis.call('HSET', KEYS[1], line, id)
  end
  local key = ARGV[1] .. ':' .. ARGV[2] .. ':' .. id
  redis.call('HSET', key, 'line', line, 'extra', ARGV[i + 1])
  redis.call('RPUSH', KEYS[3], id)
  table.insert(ids, tonumber(id))
  table.insert(recs, {tonumber(id), redis.call('HGETALL', key)})
end
local seq = emit(ARGV[1], ARGV[2] .. 's', {ids = ids, recs = recs})
return {ids, seq}
