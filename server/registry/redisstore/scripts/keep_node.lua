-- keep_node.lua: renew a node's liveness key.
--
-- KEYS[1] the node key <prefix>:node:<node>
-- ARGV[1] the node's peer address   ARGV[2] TTL in milliseconds
--
-- When the key holds ARGV[1] it only extends the TTL (PEXPIRE allocates
-- nothing, so renewal keeps working while Redis refuses writes that need
-- memory: OOM under maxmemory with noeviction); otherwise it SETs the key.
-- Returns 1 when it renewed, 2 when it (re)created the key.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2
