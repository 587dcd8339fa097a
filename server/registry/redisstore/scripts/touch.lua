-- touch.lua: record last-seen time and RTT of the current session.
--
-- KEYS[1] the device hash
-- ARGV[1] lease (decimal)   ARGV[2] last seen (RFC 3339)   ARGV[3] RTT in ns
-- ARGV[4] retention in milliseconds
--
-- Returns 1 when ARGV[1] is the current session's lease. Otherwise it
-- changes nothing (fencing: a replaced or ended session cannot write) and
-- returns 0 when a newer lease was issued (stale), 2 when the record is
-- gone or does not show the lease as current (missing: write it back).
local key = KEYS[1]
local cur = redis.call('HMGET', key, 's_lease', 'lease')
if cur[1] ~= ARGV[1] then
  if (tonumber(cur[2]) or 0) > tonumber(ARGV[1]) then
    return 0
  end
  return 2
end
redis.call('HSET', key, 's_last_seen', ARGV[2], 's_rtt_ns', ARGV[3])
redis.call('PEXPIRE', key, ARGV[4])
return 1
