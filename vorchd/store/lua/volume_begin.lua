-- Begin a detach or a destroy: move a volume from one status to the next (attached to
-- detaching, available to destroying) if it is in the first; one change at a time.
-- KEYS[1]  P:volume:<id>
-- ARGV[1]  the key prefix P;  ARGV[2] volumeid;  ARGV[3] the status it must have;
-- ARGV[4]  the status it gets;  ARGV[5] the change's token;  ARGV[6] the daemon making it
-- Returns {kind, detail, seq}: kind 'ok', else no_volume or busy (with its status) and 0.
-- Change: op "volume", {volume = {volumeid, hash}}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'no_volume', '', 0} end
if status ~= ARGV[3] then return {'busy', 'volume ' .. ARGV[2] .. ' is ' .. status, 0} end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'op', ARGV[5], 'owner', ARGV[6])
return {'ok', '', emit(ARGV[1], 'volume',
  {volume = {tonumber(ARGV[2]), redis.call('HGETALL', KEYS[1])}})}
