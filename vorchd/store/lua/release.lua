-- Give a VM's room back and forget it (a claim or a created VM). Idempotent: exactly one
-- of any number of callers gets a non-zero answer.
-- KEYS[1]  P:vm:<vmid>   KEYS[2] P:vms
-- ARGV[1]  the key prefix P;  ARGV[2] vmid
-- Returns seq, or 0 if there was no such VM.
-- Change: op "gone", {vmid, pm = {pmid, hash}}.
local vm = redis.call('HGETALL', KEYS[1])
if #vm == 0 then return 0 end
local f = {}
for i = 1, #vm, 2 do f[vm[i]] = vm[i + 1] end
local pm = ARGV[1] .. ':pm:' .. f['pmid']
for _, r in ipairs({'cpu', 'ram', 'disk'}) do
  redis.call('HINCRBY', pm, 'used_' .. r, -tonumber(f[r] or '0'))
end
redis.call('SREM', pm .. ':vms', ARGV[2])
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return emit(ARGV[1], 'gone', {vmid = tonumber(ARGV[2]),
  pm = {tonumber(f['pmid']), redis.call('HGETALL', pm)}})
