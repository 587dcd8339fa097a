-- zrem_if.lua: remove a member of a node's session index if its score is
-- the given lease (a newer entry for the same device stays).
--
-- KEYS[1] the node's session index <prefix>:node:<node>:sessions
-- ARGV[1] device id   ARGV[2] lease (decimal)
--
-- Returns 1 when removed, 0 otherwise.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
