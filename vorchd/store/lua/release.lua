-- Give a VM's room back and forget it (a claim or a created VM). Idempotent: exactly one
-- of any number of callers gets a non-zero answer.
-- KEYS[1]  P:vm:<vmid>   KEYS[2] P:vms
-- ARGV[1]  the key prefix P;  ARGV[2] vmid
-- Returns seq, or 0 if there was no such VM.
-- A change under way (change_begin) gives its held room back too.
-- Change: op "gone", {vmid, pm = {pmid, hash}, pms = {{pmid, hash}}} (pms: the PM of a
-- change's hold, when there was one).
local vm = redis.call('HGETALL', KEYS[1])
if #vm == 0 then return 0 end
local f = {}
for i = 1, #vm, 2 do f[vm[i]] = vm[i + 1] end
local pm = ARGV[1] .. ':pm:' .. f['pmid']
for _, r in ipairs({'cpu', 'ram', 'disk'}) do
  redis.call('HINCRBY', pm, 'used_' .. r, 0 - tonumber(f[r] or '0'))
end
local pms = {}
if f['change_pmid'] and f['change_pmid'] ~= '' then
  local held = ARGV[1] .. ':pm:' .. f['change_pmid']
  for _, r in ipairs({'cpu', 'ram', 'disk'}) do
    redis.call('HINCRBY', held, 'used_' .. r, 0 - tonumber(f['hold_' .. r] or '0'))
  end
  if held ~= pm then table.insert(pms, {tonumber(f['change_pmid']), held}) end
end
redis.call('SREM', pm .. ':vms', ARGV[2])
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
if f['mac'] and redis.call('HGET', ARGV[1] .. ':macs', f['mac']) == ARGV[2] then
  redis.call('HDEL', ARGV[1] .. ':macs', f['mac'])
end
for _, held in ipairs(pms) do held[2] = redis.call('HGETALL', held[2]) end
return emit(ARGV[1], 'gone', {vmid = tonumber(ARGV[2]),
  pm = {tonumber(f['pmid']), redis.call('HGETALL', pm)}, pms = pms})
