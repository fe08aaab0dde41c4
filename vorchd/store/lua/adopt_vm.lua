-- Put back the record of a VM whose domain a PM still runs but Redis forgot (say, Redis
-- lost its last second), with its room (even past capacity: it runs there), and keep the
-- vmid counter past it so that its id is never given again.
-- KEYS[1] P:vm:<vmid>  KEYS[2] P:pm:<pmid>  KEYS[3] P:pm:<pmid>:vms  KEYS[4] P:vms
-- KEYS[5] P:vmid
-- ARGV[1] the key prefix P;  ARGV[2] vmid;  ARGV[3..5] cpu, ram, disk
-- ARGV[6..] the record as field, value pairs
-- Returns seq, or 0 if Redis knows the VM already.
-- Change: op "vm", {vm = {vmid, hash}, pm = {pmid, hash}}.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
-- Its MAC is the one its domain has: the fleet's index of MACs names it (P:macs).
local mac = redis.call('HGET', KEYS[1], 'mac')
if mac and mac ~= '' then redis.call('HSET', ARGV[1] .. ':macs', mac, ARGV[2]) end
redis.call('HINCRBY', KEYS[2], 'used_cpu', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'used_ram', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'used_disk', ARGV[5])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
if tonumber(redis.call('GET', KEYS[5]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[5], ARGV[2])
end
return emit(ARGV[1], 'vm', {vm = {tonumber(ARGV[2]), redis.call('HGETALL', KEYS[1])},
  pm = {tonumber(redis.call('HGET', KEYS[1], 'pmid')), redis.call('HGETALL', KEYS[2])}})
