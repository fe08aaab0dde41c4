-- Begin attaching an available volume to an active VM: checked and held in one step.
-- A local volume whose data is not on the VM's PM yet (never made, or on another PM) has
-- its size claimed there like a VM's disk (the room rule of claim.lua); the PM it leaves
-- keeps its claim until volume_end says done. An rbd volume lives in Ceph: it claims no
-- PM's disk, and its pmid and to_pmid stay 0.
-- KEYS[1]  P:volume:<id>   KEYS[2] P:vm:<vmid>
-- ARGV[1]  the key prefix P;  ARGV[2] volumeid;  ARGV[3] vmid;  ARGV[4] the disk ratio;
-- ARGV[5]  the attach's token;  ARGV[6] the daemon making it
-- Returns {kind, detail, from pmid, to pmid, seq}: kind 'ok', else a refusal (no_volume,
-- busy, no_vm, no_room) with seq 0.
-- Change: op "volume", {volume = {volumeid, hash}, pm? = {pmid, hash}}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'no_volume', '', 0, 0, 0} end
if status ~= 'available' then
  return {'busy', 'volume ' .. ARGV[2] .. ' is ' .. status, 0, 0, 0}
end
if redis.call('HGET', KEYS[2], 'state') ~= 'active' then return {'no_vm', '', 0, 0, 0} end
local change = redis.call('HGET', KEYS[2], 'change_op')
if change and change ~= '' then
  return {'busy', 'a change of VM ' .. ARGV[3] .. ' is under way', 0, 0, 0}
end
local from = tonumber(redis.call('HGET', KEYS[1], 'pmid') or '0')
local to = tonumber(redis.call('HGET', KEYS[2], 'pmid'))
if redis.call('HGET', KEYS[1], 'backend') == 'rbd' then to = 0 end
local pmkey = ARGV[1] .. ':pm:' .. to
local data = {}
if from ~= to then
  local size = tonumber(redis.call('HGET', KEYS[1], 'size'))
  local cap = tonumber(redis.call('HGET', pmkey, 'cap_disk') or '0')
  local used = tonumber(redis.call('HGET', pmkey, 'used_disk') or '0')
  local limit = math.floor(cap * tonumber(ARGV[4]))
  if used + size > limit then
    return {'no_room', 'disk (' .. size .. ' wanted, ' .. (limit - used) .. ' free)', 0, 0, 0}
  end
  redis.call('HINCRBY', pmkey, 'used_disk', size)
  data.pm = {to, redis.call('HGETALL', pmkey)}
end
redis.call('HSET', KEYS[1], 'status', 'attaching', 'vmid', ARGV[3], 'to_pmid', to,
  'op', ARGV[5], 'owner', ARGV[6])
data.volume = {tonumber(ARGV[2]), redis.call('HGETALL', KEYS[1])}
return {'ok', '', from, to, emit(ARGV[1], 'volume', data)}
