-- End a volume's change (volume_attach, volume_begin) with token ARGV[3]: 'done' makes it
-- so, 'undo' puts the volume back as it was.
--   attaching   done: attached on to_pmid, the size claimed on the PM it left given back;
--               undo: available, the size claimed on to_pmid given back (if it was)
--   detaching   done: available (its data stays where it is);  undo: attached
--   destroying  done: forgotten, its size given back;  undo: available
-- KEYS[1]  P:volume:<id>   KEYS[2] P:volumes
-- ARGV[1]  the key prefix P;  ARGV[2] volumeid;  ARGV[3] the token;  ARGV[4] done | undo
-- Returns seq, or 0 if the volume had no such change.
-- Change: op "volume", {volume = {volumeid, hash}, pms = {{pmid, hash}...}}, or for a
-- destroy op "volume_gone", {volumeid, pms}.
local v = {}
local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then return 0 end
for i = 1, #flat, 2 do v[flat[i]] = flat[i + 1] end
if v.op ~= ARGV[3] then return 0 end
local done = ARGV[4] == 'done'
local size = tonumber(v.size)
local pmid, to = tonumber(v.pmid), tonumber(v.to_pmid or '0')
local touched = {}
local function give_back(id)
  if id == 0 then return end
  redis.call('HINCRBY', ARGV[1] .. ':pm:' .. id, 'used_disk', -size)
  table.insert(touched, id)
end
if v.status == 'attaching' then
  if done then
    if pmid ~= to then give_back(pmid) end
    redis.call('HSET', KEYS[1], 'status', 'attached', 'pmid', to)
  else
    if pmid ~= to then give_back(to) end
    redis.call('HSET', KEYS[1], 'status', 'available', 'vmid', 0)
  end
elseif v.status == 'detaching' then
  if done then
    redis.call('HSET', KEYS[1], 'status', 'available', 'vmid', 0)
  else
    redis.call('HSET', KEYS[1], 'status', 'attached')
  end
elseif v.status == 'destroying' then
  if done then
    give_back(pmid)
    redis.call('DEL', KEYS[1])
    redis.call('SREM', KEYS[2], ARGV[2])
  else
    redis.call('HSET', KEYS[1], 'status', 'available')
  end
else
  return 0
end
local pms = {}
for _, id in ipairs(touched) do
  table.insert(pms, {id, redis.call('HGETALL', ARGV[1] .. ':pm:' .. id)})
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return emit(ARGV[1], 'volume_gone', {volumeid = tonumber(ARGV[2]), pms = pms})
end
redis.call('HDEL', KEYS[1], 'op', 'to_pmid', 'owner')
return emit(ARGV[1], 'volume', {volume = {tonumber(ARGV[2]), redis.call('HGETALL', KEYS[1])},
  pms = pms})
