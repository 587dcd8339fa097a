-- remirror.lua: write a live session back as current (after Redis lost data).
--
-- KEYS[1] the device hash
-- ARGV[1] device id   ARGV[2] lease (decimal, below 2^53)
-- ARGV[3] node   ARGV[4] remote address   ARGV[5] liveness mode name
-- ARGV[6] "1" when ARGV[7] (info JSON) and ARGV[8] (boot id) replace the info
-- ARGV[9] connected at   ARGV[10] last seen (RFC 3339)   ARGV[11] RTT in ns
-- ARGV[12] retention in milliseconds
--
-- Applies only when the stored highest lease is <= ARGV[2]; the stored lease
-- then becomes ARGV[2], so it is never below a lease a node still holds.
-- Returns {"0"} when refused (a newer lease exists; nothing changes),
-- {"1", "1"} when applied and the session was not already current,
-- {"1", "0"} when it already was.
local key = KEYS[1]
local cur = redis.call('HMGET', key, 'lease', 's_lease')
local highest = tonumber(cur[1]) or 0
local lease = tonumber(ARGV[2])
if not lease or highest > lease then
  return {'0'}
end
local changed = '1'
if cur[2] == ARGV[2] then
  changed = '0'
else
  redis.call('HDEL', key, 's_claim')
end
redis.call('HSET', key, 'id', ARGV[1], 'lease', ARGV[2],
  's_lease', ARGV[2], 's_node', ARGV[3], 's_remote', ARGV[4], 's_mode', ARGV[5],
  's_connected', ARGV[9], 's_last_seen', ARGV[10], 's_rtt_ns', ARGV[11])
if ARGV[6] == '1' then
  redis.call('HSET', key, 'info', ARGV[7], 'boot_id', ARGV[8])
end
redis.call('HSETNX', key, 'first_seen', ARGV[9])
redis.call('PEXPIRE', key, ARGV[12])
return {'1', changed}
