-- Turn a claim into a created VM.
-- KEYS[1]  P:vm:<vmid>   KEYS[2] P:pm:<pmid>:vms
-- ARGV[1]  the key prefix P;  ARGV[2] vmid;  ARGV[3] the claim's create token ("op"), or ""
-- Returns seq, or 0 if the claim is gone, or (a token given) is another create's: after a
-- failover lost a claim and the vmid counter's last steps, another create may hold the
-- same vmid. Change: op "vm", {vm = {vmid, hash}}.
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return 0 end
if ARGV[3] ~= nil and ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'op') ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'active')
redis.call('SADD', KEYS[2], ARGV[2])
return emit(ARGV[1], 'vm', {vm = {tonumber(ARGV[2]), redis.call('HGETALL', KEYS[1])}})
