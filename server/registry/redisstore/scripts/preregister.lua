-- preregister.lua: create the record of a device expected to connect.
--
-- KEYS[1] the device hash
-- ARGV[1] device id   ARGV[2] labels as a JSON object   ARGV[3] now (RFC 3339)
-- ARGV[4] retention of a never-connected record in milliseconds
--
-- Only when no record exists: writes id, lease "0" (no lease was issued:
-- the first claim's lease follows the usual rule), pre_labels and
-- registered, with the never-connected retention. Returns 1 when created,
-- 0 when a record exists (nothing changes).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'lease', '0', 'pre_labels', ARGV[2], 'registered', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
