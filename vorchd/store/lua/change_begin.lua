-- Begin a change of a created VM's flavor or PM (a resize, a move): hold the room it
-- needs on the PM it goes to, checked and taken in one step like a claim's. The VM keeps
-- its PM, flavor and room until change_end says done; one change at a time per VM.
-- The hold is what the change adds to the target PM's use before it is done: for a
-- resize the growth of each resource (on its own PM), for a move the whole flavor.
-- KEYS[1]  P:vm:<vmid>     KEYS[2] P:pm:<target pmid>
-- ARGV[1]  the key prefix P;  ARGV[2] vmid;  ARGV[3] target pmid;  ARGV[4] the kind
--          (resize | move);  ARGV[5] the change's token;  ARGV[6] the daemon making it
-- ARGV[7]  the new instance_type;  ARGV[8..10] the new cpu, ram, disk
-- ARGV[11..13] the hold: cpu, ram, disk;  ARGV[14..16] the cpu, ram, disk ratios
-- Returns {kind, detail, seq}: kind 'ok', else a refusal (no_vm, busy, unknown_pm,
-- drained, no_room) with seq 0.
-- Change: op "vm", {vm = {vmid, hash}, pm = {target pmid, hash}}.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'active' then return {'no_vm', '', 0} end
local current = redis.call('HGET', KEYS[1], 'change_op')
if current and current ~= '' then
  return {'busy', 'a ' .. (redis.call('HGET', KEYS[1], 'change_kind') or 'change') ..
    ' of it is under way', 0}
end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'unknown_pm', '', 0} end
if ARGV[4] == 'move' and redis.call('HGET', KEYS[2], 'drained') == '1' then
  return {'drained', '', 0}
end
local names = {'cpu', 'ram', 'disk'}
local short = {}
for i, r in ipairs(names) do
  local hold = tonumber(ARGV[10 + i])
  if hold > 0 then
    local cap = tonumber(redis.call('HGET', KEYS[2], 'cap_' .. r) or '0')
    local used = tonumber(redis.call('HGET', KEYS[2], 'used_' .. r) or '0')
    local limit = math.floor(cap * tonumber(ARGV[13 + i]))
    if used + hold > limit then
      table.insert(short, r .. ' (' .. hold .. ' wanted, ' .. (limit - used) .. ' free)')
    end
  end
end
if #short > 0 then return {'no_room', table.concat(short, ', '), 0} end
for i, r in ipairs(names) do redis.call('HINCRBY', KEYS[2], 'used_' .. r, ARGV[10 + i]) end
redis.call('HSET', KEYS[1], 'change_kind', ARGV[4], 'change_op', ARGV[5],
  'change_owner', ARGV[6], 'change_pmid', ARGV[3], 'change_tid', ARGV[7],
  'change_cpu', ARGV[8], 'change_ram', ARGV[9], 'change_disk', ARGV[10],
  'hold_cpu', ARGV[11], 'hold_ram', ARGV[12], 'hold_disk', ARGV[13])
local seq = emit(ARGV[1], 'vm', {vm = {tonumber(ARGV[2]), redis.call('HGETALL', KEYS[1])},
  pm = {tonumber(ARGV[3]), redis.call('HGETALL', KEYS[2])}})
return {'ok', '', seq}
