-- Record a new volume, available and not yet made anywhere (pmid 0: a local volume is
-- made on the PM of the first VM it is attached to). Its id comes from P:volid, so no
-- volume id is ever given twice.
-- KEYS[1]  P:volid   KEYS[2] P:volumes (every volume id)
-- ARGV[1]  the key prefix P;  ARGV[2] name;  ARGV[3] size in GiB;  ARGV[4] the backend
-- Returns {volumeid, seq}.
-- Change: op "volume", {volume = {volumeid, hash}}.
local id = redis.call('INCR', KEYS[1])
local key = ARGV[1] .. ':volume:' .. id
redis.call('HSET', key, 'volumeid', id, 'name', ARGV[2], 'size', ARGV[3],
  'status', 'available', 'pmid', 0, 'vmid', 0, 'backend', ARGV[4])
redis.call('SADD', KEYS[2], id)
local seq = emit(ARGV[1], 'volume', {volume = {id, redis.call('HGETALL', key)}})
return {id, seq}
