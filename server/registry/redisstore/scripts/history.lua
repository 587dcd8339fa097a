-- history.lua is prepended to the scripts that end sessions (claim.lua,
-- release.lua; see scripts.go), which call push_history.
--
-- push_history records an ended session in the device's history list
-- (KEYS[2], same hash slot): newest first, at most n entries, expiring ttl
-- milliseconds after the last push. Written after the hash's own writes (an
-- OOM refusal can only hit the first write of a script).
local function push_history(lease, node, connected, ended, reason, restart, rtt, msg, n, ttl)
  n = tonumber(n) or 0
  if n <= 0 then return end
  redis.call('LPUSH', KEYS[2], cjson.encode({lease = lease, node = node, connected = connected or '',
    ended = ended, reason = reason, restart = restart, rtt_ns = rtt or '0', message = string.sub(msg or '', 1, 128)}))
  redis.call('LTRIM', KEYS[2], 0, n - 1)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
