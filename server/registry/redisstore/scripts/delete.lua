-- delete.lua: remove a device's record and history (Delete).
--
-- KEYS[1] the device hash   KEYS[2] its history list
-- ARGV[1] the node the caller read as the session's (s_node) before the call
-- ARGV[2] "1" if that node's liveness key existed, "0" if not
--
-- Refuses with {"online", s_lease, s_node} while a session is current on a
-- node that is not known dead (a session on the checked, dead node reads
-- offline and does not count). Returns {"0"} when there is no record, and
-- {"1", s_lease, s_node} after deleting ("" when no session was current),
-- so the caller can clean the node's session index.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0'}
end
local s = redis.call('HMGET', KEYS[1], 's_lease', 's_node')
if s[1] and s[1] ~= '' and not (s[2] == ARGV[1] and ARGV[2] == '0') then
  return {'online', s[1], s[2] or ''}
end
redis.call('DEL', KEYS[1], KEYS[2])
return {'1', s[1] or '', s[2] or ''}
