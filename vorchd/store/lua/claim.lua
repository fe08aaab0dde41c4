-- Claim room on a PM for a VM, or say why not: checks and writes in one step, so no two
-- claims can both see the same free room. The room rule is vorchd.room's:
-- limit = floor(capacity * ratio), and a claim fits while used + wanted <= limit.
-- KEYS[1]  P:pm:<pmid>      KEYS[2] P:vms (every vmid holding a claim)
-- KEYS[3]  P:vmid           the vmid counter  KEYS[4] P:vmid:block (see lua/_vmid.lua)
-- ARGV[1]  the key prefix P;  ARGV[2] vmid, or 0 for a new one from P:vmid
-- ARGV[3..5] cpu, ram, disk wanted;  ARGV[6..8] the cpu, ram, disk ratios
-- ARGV[9]  the fleet's name prefix (the domain is prefix .. vmid, its disk that .. '.qcow2',
--          its NIC's MAC address 02: and five bytes of the domain name's SHA-1, as
--          vorchd.network.mac_of makes it, unless another VM has that one: P:macs)
-- ARGV[10..] the VM's record as field, value pairs
-- Returns {kind, detail, vmid[, mac], seq}: kind 'ok' (with the VM's MAC address) when
-- claimed, else a refusal kind of
-- vorchd.room.Refusal (unknown_pm, drained, vmid_taken, no_room) with seq 0, or
-- 'reserve' when a new vmid needs a block of them made durable first (vorchd.store.vmids).
-- Change: op "vm", {vm = {vmid, hash}, pm = {pmid, hash}}.
local vmid = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_pm', '', vmid, 0} end
if redis.call('HGET', KEYS[1], 'drained') == '1' then return {'drained', '', vmid, 0} end
if vmid == 0 then
  vmid = new_vmid(KEYS[3], KEYS[4])
  if not vmid then return {'reserve', '', 0, 0} end
end
local vmkey = ARGV[1] .. ':vm:' .. vmid
if redis.call('EXISTS', vmkey) == 1 then return {'vmid_taken', '', vmid, 0} end
local names = {'cpu', 'ram', 'disk'}
local short = {}
for i, r in ipairs(names) do
  local cap = tonumber(redis.call('HGET', KEYS[1], 'cap_' .. r) or '0')
  local used = tonumber(redis.call('HGET', KEYS[1], 'used_' .. r) or '0')
  local limit = math.floor(cap * tonumber(ARGV[5 + i]))
  local wanted = tonumber(ARGV[2 + i])
  if used + wanted > limit then
    table.insert(short, r .. ' (' .. wanted .. ' wanted, ' .. (limit - used) .. ' free)')
  end
end
if #short > 0 then return {'no_room', table.concat(short, ', '), vmid, 0} end
for i, r in ipairs(names) do redis.call('HINCRBY', KEYS[1], 'used_' .. r, ARGV[2 + i]) end
local domain = ARGV[9] .. vmid
-- The MAC no other VM of the fleet has (P:macs): the name's, or, should that be taken
-- (five bytes of a hash: rare, not impossible), the name's with #1, #2, ... after it;
-- one held by a VM that is gone is free.
local macs = ARGV[1] .. ':macs'
local mac, n = nil, 0
while true do
  local h = redis.sha1hex(n == 0 and domain or (domain .. '#' .. n))
  mac = '02:' .. h:sub(1, 2) .. ':' .. h:sub(3, 4) .. ':' .. h:sub(5, 6) .. ':' ..
    h:sub(7, 8) .. ':' .. h:sub(9, 10)
  local holder = redis.call('HGET', macs, mac)
  if not holder or holder == tostring(vmid)
      or redis.call('EXISTS', ARGV[1] .. ':vm:' .. holder) == 0 then
    break
  end
  n = n + 1
end
redis.call('HSET', macs, mac, vmid)
redis.call('HSET', vmkey, 'vmid', vmid, 'domain', domain, 'volume', domain .. '.qcow2',
  'mac', mac, 'cpu', ARGV[3], 'ram', ARGV[4], 'disk', ARGV[5], 'state', 'creating',
  unpack(ARGV, 10))
redis.call('SADD', KEYS[2], vmid)
local seq = emit(ARGV[1], 'vm', {vm = {vmid, redis.call('HGETALL', vmkey)},
  pm = {tonumber(redis.call('HGET', vmkey, 'pmid')), redis.call('HGETALL', KEYS[1])}})
return {'ok', '', vmid, mac, seq}
