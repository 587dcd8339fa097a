-- job_acquire: take or renew a RUNNING job's runner lease.
-- KEYS: 1 job hash
-- ARGV: 1 runner, 2 now (unix ms), 3 ttl (ms)
-- Reply: 1 held by the runner now, -1 no such job, -2 not running,
--        -3 another runner's lease has not lapsed.
local h = redis.call('HMGET', KEYS[1], 'state', 'runner', 'until')
if not h[1] then return -1 end
if h[1] ~= '1' then return -2 end
if h[2] and h[2] ~= '' and h[2] ~= ARGV[1] and tonumber(ARGV[2]) < tonumber(h[3] or '0') then return -3 end
redis.call('HSET', KEYS[1], 'runner', ARGV[1], 'until', tonumber(ARGV[2]) + tonumber(ARGV[3]))
return 1
