-- A new vmid from the counter, as a claim takes one (see lua/_vmid.lua).
-- KEYS[1] P:vmid  KEYS[2] P:vmid:block
-- ARGV[1] the key prefix P
-- Returns the vmid, or 0 when a block must be reserved first.
return new_vmid(KEYS[1], KEYS[2]) or 0
