-- job_end: end a RUNNING job (DONE by its runner, or CANCELLED by anyone)
-- and keep its keys for the retention.
-- KEYS: 1 job hash, 2 job device ids, 3 device states, 4 device results,
--       5 running jobs (set)
-- ARGV: 1 new state (2 DONE, 3 CANCELLED), 2 runner ("" for a cancel),
--       3 now (unix ms), 4 retention (ms)
-- Reply: 1 ended, 0 already ended (unchanged), -1 no such job,
--        -3 the runner does not hold the job.
local h = redis.call('HMGET', KEYS[1], 'state', 'runner', 'until')
if not h[1] then return -1 end
if h[1] ~= '1' then return 0 end
if ARGV[1] == '2' and (h[2] ~= ARGV[2] or tonumber(ARGV[3]) >= tonumber(h[3] or '0')) then return -3 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'ended', ARGV[3])
if ARGV[1] == '2' then redis.call('HSET', KEYS[1], 'runner', '') end
redis.call('SREM', KEYS[5], redis.call('HGET', KEYS[1], 'id'))
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return 1
