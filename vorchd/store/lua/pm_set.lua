-- Set fields of a PM's hash (capacity from discovery, the drained flag), if it exists.
-- KEYS[1]  P:pm:<pmid>
-- ARGV[1]  the key prefix P;  ARGV[2] pmid;  ARGV[3..] field, value pairs
-- Returns seq, or 0 if the fleet has no such PM. Change: op "pm", {pm = {pmid, hash}}.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return emit(ARGV[1], 'pm', {pm = {tonumber(ARGV[2]), redis.call('HGETALL', KEYS[1])}})
