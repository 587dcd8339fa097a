-- release.lua: end the current session and record how it ended.
--
-- KEYS[1] the device hash
-- ARGV[1] lease (decimal)   ARGV[2] node ("" = the session's node)
-- ARGV[3] reason name       ARGV[4] time (RFC 3339)   ARGV[5] message
-- ARGV[6] restart verdict name   ARGV[7] retention in milliseconds
-- ARGV[8] claim id: when not "", the session is matched by the claim id that
--         made it (s_claim) instead of by ARGV[1] (ReleaseClaim)
-- KEYS[2] the device's history list   ARGV[9] its length (0 = keep none)
-- ARGV[10] its retention in milliseconds
--
-- Returns {"1", node, lease} when the session matched: its fields are
-- removed (the device reads offline), d_* hold the end and the history has
-- it as its newest entry. Otherwise
-- nothing changes and it returns {"0"} when a newer lease was issued than
-- ARGV[1] (stale), {"2"} when there is nothing to end (missing).
-- push_history (history.lua, prepended at load) records ended sessions.

local key = KEYS[1]
local s = redis.call('HMGET', key, 's_lease', 's_node', 'lease', 's_claim', 's_connected', 's_rtt_ns')
local lease = ARGV[1]
if ARGV[8] ~= '' then
  if not s[1] or s[1] == '' or s[4] ~= ARGV[8] then
    return {'2'}
  end
  lease = s[1]
elseif s[1] ~= lease then
  if (tonumber(s[3]) or 0) > tonumber(lease) then
    return {'0'}
  end
  return {'2'}
end
local node = ARGV[2]
if node == '' then
  node = s[2] or ''
end
redis.call('HDEL', key, 's_lease', 's_node', 's_remote', 's_mode', 's_connected', 's_last_seen', 's_rtt_ns', 's_claim')
redis.call('HSET', key, 'd_lease', lease, 'd_node', node, 'd_reason', ARGV[3],
  'd_time', ARGV[4], 'd_message', ARGV[5], 'd_restart', ARGV[6])
redis.call('PEXPIRE', key, ARGV[7])
push_history(lease, node, s[5], ARGV[4], ARGV[3], ARGV[6], s[6], ARGV[5], ARGV[9], ARGV[10])
return {'1', node, lease}
