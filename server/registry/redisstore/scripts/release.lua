-- release.lua: end the current session and record how it ended.
--
-- KEYS[1] the device hash
-- ARGV[1] lease (decimal)   ARGV[2] node ("" = the session's node)
-- ARGV[3] reason name       ARGV[4] time (RFC 3339)   ARGV[5] message
-- ARGV[6] restart verdict name   ARGV[7] retention in milliseconds
--
-- Returns {"1", node} when ARGV[1] was the current lease: the session fields
-- are removed (the device reads offline) and d_* hold the end. Returns {"0"}
-- and changes nothing otherwise.
local key = KEYS[1]
local s = redis.call('HMGET', key, 's_lease', 's_node')
if s[1] ~= ARGV[1] then
  return {'0'}
end
local node = ARGV[2]
if node == '' then
  node = s[2] or ''
end
redis.call('HDEL', key, 's_lease', 's_node', 's_remote', 's_mode', 's_connected', 's_last_seen', 's_rtt_ns')
redis.call('HSET', key, 'd_lease', ARGV[1], 'd_node', node, 'd_reason', ARGV[3],
  'd_time', ARGV[4], 'd_message', ARGV[5], 'd_restart', ARGV[6])
redis.call('PEXPIRE', key, ARGV[7])
return {'1', node}
