-- End a change begun by change_begin: 'done' makes it the VM's (its PM, flavor and room
-- are the new ones, the old PM's room given back), 'undo' gives the held room back and
-- leaves the VM as it was.
-- KEYS[1]  P:vm:<vmid>
-- ARGV[1]  the key prefix P;  ARGV[2] vmid;  ARGV[3] the change's token;  ARGV[4] done
--          or undo
-- Returns seq, or 0 if the VM has no change of that token (ended already).
-- Change: op "vm", {vm = {vmid, hash}, pms = {{pmid, hash}...}} (the PMs whose use changed).
local vmkey = KEYS[1]
if redis.call('HGET', vmkey, 'change_op') ~= ARGV[3] then return 0 end
local f = {}
local flat = redis.call('HGETALL', vmkey)
for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
local names = {'cpu', 'ram', 'disk'}
local old = ARGV[1] .. ':pm:' .. f['pmid']
local new = ARGV[1] .. ':pm:' .. f['change_pmid']
for _, r in ipairs(names) do
  redis.call('HINCRBY', new, 'used_' .. r, 0 - tonumber(f['hold_' .. r] or '0'))
end
if ARGV[4] == 'done' then
  for _, r in ipairs(names) do
    redis.call('HINCRBY', old, 'used_' .. r, 0 - tonumber(f[r] or '0'))
    redis.call('HINCRBY', new, 'used_' .. r, tonumber(f['change_' .. r] or '0'))
  end
  if old ~= new then
    redis.call('SREM', old .. ':vms', ARGV[2])
    redis.call('SADD', new .. ':vms', ARGV[2])
  end
  redis.call('HSET', vmkey, 'pmid', f['change_pmid'], 'instance_type', f['change_tid'],
    'cpu', f['change_cpu'], 'ram', f['change_ram'], 'disk', f['change_disk'])
end
redis.call('HDEL', vmkey, 'change_kind', 'change_op', 'change_owner', 'change_pmid',
  'change_tid', 'change_cpu', 'change_ram', 'change_disk', 'hold_cpu', 'hold_ram',
  'hold_disk')
local pms = {{tonumber(f['pmid']), redis.call('HGETALL', old)}}
if old ~= new then
  table.insert(pms, {tonumber(f['change_pmid']), redis.call('HGETALL', new)})
end
return emit(ARGV[1], 'vm', {vm = {tonumber(ARGV[2]), redis.call('HGETALL', vmkey)}, pms = pms})
