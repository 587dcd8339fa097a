-- update_info.lua: replace the device info if the lease is current.
--
-- KEYS[1] the device hash
-- ARGV[1] lease (decimal)   ARGV[2] info JSON   ARGV[3] boot id
-- ARGV[4] retention in milliseconds
--
-- Returns {"1", node of the session} when applied. When ARGV[1] is not the
-- current session's lease nothing changes and it returns {"0"} if a newer
-- lease was issued (stale), {"2"} otherwise (missing).
local key = KEYS[1]
local s = redis.call('HMGET', key, 's_lease', 's_node', 'lease')
if s[1] ~= ARGV[1] then
  if (tonumber(s[3]) or 0) > tonumber(ARGV[1]) then
    return {'0'}
  end
  return {'2'}
end
redis.call('HSET', key, 'info', ARGV[2], 'boot_id', ARGV[3])
redis.call('PEXPIRE', key, ARGV[4])
return {'1', s[2] or ''}
