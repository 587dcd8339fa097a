-- job_device: move one device of a job to a new state, fenced by the
-- runner lease. DISPATCHED (2) only from PENDING (1) and only while the job
-- is RUNNING; a final state (3..6) from PENDING or DISPATCHED.
-- KEYS: 1 job hash, 2 job device ids (zset), 3 device states (hash),
--       4 device results (hash)
-- ARGV: 1 runner, 2 now (unix ms), 3 device id, 4 new state, 5 result (proto bytes)
-- Reply: 1 done, -1 no such job or device, -2 job not running,
--        -3 the runner does not hold the job, -4 the device is not in a
--        state that allows it.
local h = redis.call('HMGET', KEYS[1], 'state', 'runner', 'until')
if not h[1] then return -1 end
if h[2] ~= ARGV[1] or tonumber(ARGV[2]) >= tonumber(h[3] or '0') then return -3 end
local new = ARGV[4]
if new == '2' and h[1] ~= '1' then return -2 end
if not redis.call('ZSCORE', KEYS[2], ARGV[3]) then return -1 end
local cur = redis.call('HGET', KEYS[3], ARGV[3]) or '1'
if new == '2' then
  if cur ~= '1' then return -4 end
elseif cur ~= '1' and cur ~= '2' then
  return -4
end
redis.call('HSET', KEYS[3], ARGV[3], new)
redis.call('HSET', KEYS[4], ARGV[3], ARGV[5])
redis.call('HINCRBY', KEYS[1], 'c' .. cur, -1)
redis.call('HINCRBY', KEYS[1], 'c' .. new, 1)
return 1
