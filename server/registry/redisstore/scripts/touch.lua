-- touch.lua: record last-seen time and RTT of the current session.
--
-- KEYS[1] the device hash
-- ARGV[1] lease (decimal)   ARGV[2] last seen (RFC 3339)   ARGV[3] RTT in ns
-- ARGV[4] retention in milliseconds
--
-- Returns 1 when ARGV[1] is the current session's lease, else 0 and
-- changes nothing (fencing: a replaced or ended session cannot write).
local key = KEYS[1]
if redis.call('HGET', key, 's_lease') ~= ARGV[1] then
  return 0
end
redis.call('HSET', key, 's_last_seen', ARGV[2], 's_rtt_ns', ARGV[3])
redis.call('PEXPIRE', key, ARGV[4])
return 1
