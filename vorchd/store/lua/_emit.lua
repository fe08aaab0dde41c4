-- Prepended to every script that changes state (see vorchd/store/scripts.py).
-- emit(prefix, op, data): append one entry to the change stream P:changes, numbered by
-- the counter P:seq, and return that number. The entry is {s = seq, o = op, d = JSON of
-- data}: enough for a read model to apply the change without reading anything else.
-- Written in the same script as the change, so there is no change without its entry.
local function emit(prefix, op, data)
  local seq = redis.call('INCR', prefix .. ':seq')
  redis.call('XADD', prefix .. ':changes', 'MAXLEN', '~', STREAM_MAXLEN, '*',
    's', seq, 'o', op, 'd', cjson.encode(data))
  return seq
end
