-- The whole state a read model needs, taken at one instant, as one JSON document:
-- {seq, last (the change stream's last entry id, '0-0' if none), fleet, settings,
--  pms = {active = {ids}, recs = {{pmid, hash, {vmids}}...}} (every PM ever known),
--  images = {active, recs = {{id, hash}...}}, flavors = {{tid, hash}...} (current ones),
--  vms = {{vmid, hash}...} (every VM holding a claim),
--  volumes = {{volumeid, hash}...} (every volume)}.
-- Read-only.
-- KEYS: none.  ARGV[1] the key prefix P.
local p = ARGV[1]
local function ids(key)
  local out = {}
  for _, id in ipairs(redis.call('LRANGE', key, 0, -1)) do table.insert(out, tonumber(id)) end
  return out
end
local last = redis.call('XREVRANGE', p .. ':changes', '+', '-', 'COUNT', 1)
local doc = {
  seq = tonumber(redis.call('GET', p .. ':seq') or '0'),
  last = (last[1] and last[1][1]) or '0-0',
  fleet = redis.call('GET', p .. ':fleet') or '',
  settings = redis.call('HGETALL', p .. ':settings'),
  pms = {active = ids(p .. ':pm:active'), recs = {}},
  images = {active = ids(p .. ':image:active'), recs = {}},
  flavors = {},
  vms = {},
  volumes = {},
}
for _, id in ipairs(redis.call('HVALS', p .. ':pm:index')) do
  local key = p .. ':pm:' .. id
  table.insert(doc.pms.recs, {tonumber(id), redis.call('HGETALL', key),
    redis.call('SMEMBERS', key .. ':vms')})
end
for _, id in ipairs(doc.images.active) do
  table.insert(doc.images.recs, {id, redis.call('HGETALL', p .. ':image:' .. id)})
end
for _, tid in ipairs(ids(p .. ':flavor:active')) do
  table.insert(doc.flavors, {tid, redis.call('HGETALL', p .. ':flavor:' .. tid)})
end
for _, id in ipairs(redis.call('SMEMBERS', p .. ':vms')) do
  table.insert(doc.vms, {tonumber(id), redis.call('HGETALL', p .. ':vm:' .. id)})
end
for _, id in ipairs(redis.call('SMEMBERS', p .. ':volumes')) do
  table.insert(doc.volumes, {tonumber(id), redis.call('HGETALL', p .. ':volume:' .. id)})
end
return cjson.encode(doc)
