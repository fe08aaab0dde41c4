-- Record a state (active | missing) for a created VM (a claim still being created has
-- no state to record: only its commit makes it a VM, listed on its PM).
-- KEYS[1]  P:vm:<vmid>
-- ARGV[1]  the key prefix P;  ARGV[2] vmid;  ARGV[3] the state
-- Returns seq, or 0 if there is no such created VM. Change: op "vm", {vm = {vmid, hash}}.
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'creating' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[3])
return emit(ARGV[1], 'vm', {vm = {tonumber(ARGV[2]), redis.call('HGETALL', KEYS[1])}})
