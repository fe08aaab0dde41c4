-- Once per fleet: put the MACs of the VMs made before P:macs existed into it, so that
-- claims give no new VM the MAC of one of them (see lua/claim.lua).
-- KEYS[1] P:vms  KEYS[2] P:macs  KEYS[3] P:macs:indexed
-- ARGV[1] the key prefix P
-- Returns how many MACs it added (0 when the index was made already).
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local added = 0
for _, vmid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local mac = redis.call('HGET', ARGV[1] .. ':vm:' .. vmid, 'mac')
  if mac and mac ~= '' then
    added = added + redis.call('HSETNX', KEYS[2], mac, vmid)
  end
end
redis.call('SET', KEYS[3], '1')
return added
