-- claim.lua: make a new session current for one device.
--
-- KEYS[1]  the device hash  <prefix>:{d:<id>}
-- ARGV[1]  device id
-- ARGV[2]  floor (decimal): the new lease must be above it (the caller's min
--          lease and its own clock in microseconds: registry.ClaimFloor)
-- ARGV[3]  node            ARGV[4]  remote address    ARGV[5]  liveness mode name
-- ARGV[6]  "1" when ARGV[7] (info JSON) and ARGV[8] (boot id) replace the stored info
-- ARGV[9]  claim time (RFC 3339, the claimant's clock)
-- ARGV[10] the node the caller checked before the call, ARGV[11] "1" if that
--          node's liveness key existed, "0" if not (node keys live in other
--          hash slots, so the script cannot look)
-- ARGV[12] retention in milliseconds (PEXPIRE of the hash)
-- ARGV[13] claim id ("" = none): recorded as s_claim; a call whose claim id is
--          already the current session's returns that session again
-- KEYS[2]  the device's history list   ARGV[14] its length (0 = keep none)
-- ARGV[15] its retention in milliseconds
--
-- A session this claim ends is pushed to the history with its restart
-- verdict; when the previous session had already ended, the newest history
-- entry (that session) learns the verdict.
--
-- Lease = max(stored lease + 1, Redis TIME in microseconds, floor + 1). With
-- the claiming replica's clock in the floor, neither a Redis host whose clock
-- is behind nor a lost hash makes a lease go backwards unless both clocks are
-- behind the one that issued the previous lease. Leases stay below 2^53
-- (exact in Lua's doubles) and are formatted with %.0f, never tostring
-- (which would print 1.8e+15).
--
-- Writes nothing before every check has passed, so an error reply before
-- the first HSET leaves the hash as it was.
--
-- Returns {lease, replaced lease, node, reason, time, restart, message,
-- again}; the replaced fields are "" when no session was current; again is
-- "1" when the claim id was already current (nothing changed). A current
-- session on the checked, dead node ends as NODE_LOST (at its last-seen
-- time); any other current session ends as REPLACED at the claim time.
-- push_history (history.lua, prepended at load) records ended sessions.

local key = KEYS[1]
local cur = redis.call('HMGET', key, 'lease', 's_lease', 's_node', 's_last_seen', 's_connected', 'boot_id', 'd_lease', 's_claim', 's_rtt_ns')
if ARGV[13] ~= '' and cur[8] == ARGV[13] and cur[2] and cur[2] ~= '' then
  return {cur[2], '', '', '', '', '', '', '1'}
end
local highest = tonumber(cur[1]) or 0
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease = math.max(highest + 1, now_us, (tonumber(ARGV[2]) or 0) + 1)
if lease >= 9007199254740992 then
  return redis.error_reply('ERR tether: lease would exceed 2^53')
end
local lease_s = string.format('%.0f', lease)

local stored_boot = cur[6] or ''
local new_boot = ARGV[8]
if ARGV[6] ~= '1' then new_boot = '' end
local restart = 'DEVICE_RESTART_UNSPECIFIED'
if stored_boot ~= '' and new_boot ~= '' then
  if stored_boot == new_boot then
    restart = 'DEVICE_RESTART_SAME_BOOT'
  else
    restart = 'DEVICE_RESTART_RESTARTED'
  end
end

local out = {lease_s, '', '', '', '', '', '', '0'}
local old_lease = cur[2]
if old_lease and old_lease ~= '' then
  local old_node = cur[3] or ''
  local reason = 'DISCONNECT_REASON_REPLACED'
  local at = ARGV[9]
  local msg = 'replaced by lease ' .. lease_s .. ' on node ' .. ARGV[3]
  if old_node == ARGV[10] and ARGV[11] == '0' then
    reason = 'DISCONNECT_REASON_NODE_LOST'
    if cur[4] and cur[4] ~= '' then
      at = cur[4]
    elseif cur[5] and cur[5] ~= '' then
      at = cur[5]
    end
    msg = 'server node ' .. old_node .. ' stopped renewing its liveness'
  end
  redis.call('HSET', key, 'd_lease', old_lease, 'd_node', old_node, 'd_reason', reason,
    'd_time', at, 'd_message', msg, 'd_restart', restart)
  out = {lease_s, old_lease, old_node, reason, at, restart, msg, '0'}
  push_history(old_lease, old_node, cur[5], at, reason, restart, cur[9], msg, ARGV[14], ARGV[15])
elseif cur[7] and cur[7] == cur[1] then
  -- The previous session already ended: its end learns the verdict.
  redis.call('HSET', key, 'd_restart', restart)
  local head = redis.call('LINDEX', KEYS[2], 0)
  if head then
    local ok, e = pcall(cjson.decode, head)
    if ok and type(e) == 'table' and e.lease == cur[7] then
      e.restart = restart
      redis.call('LSET', KEYS[2], 0, cjson.encode(e))
    end
  end
end

redis.call('HSET', key, 'id', ARGV[1], 'lease', lease_s,
  's_lease', lease_s, 's_node', ARGV[3], 's_remote', ARGV[4], 's_mode', ARGV[5],
  's_connected', ARGV[9], 's_last_seen', ARGV[9], 's_rtt_ns', '0', 's_claim', ARGV[13])
if ARGV[6] == '1' then
  redis.call('HSET', key, 'info', ARGV[7], 'boot_id', ARGV[8])
end
redis.call('HSETNX', key, 'first_seen', ARGV[9])
redis.call('PEXPIRE', key, ARGV[12])
return out
