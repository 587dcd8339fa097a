-- job_create: store a RUNNING job with every device PENDING.
-- KEYS: 1 job hash, 2 job device ids (zset), 3 jobs index (zset), 4 running jobs (set)
-- ARGV: 1 job id, 2 spec (proto bytes), 3 created (unix ms), 4 created by,
--       5 max running jobs, 6.. device ids
-- Reply: 1 created, 0 too many running jobs, -1 the job id exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[5]) then return 0 end
local n = 0
for i = 6, #ARGV do
  n = n + redis.call('ZADD', KEYS[2], 0, ARGV[i])
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'spec', ARGV[2], 'created', ARGV[3], 'by', ARGV[4],
  'state', '1', 'total', n, 'c1', n, 'runner', '', 'until', '0')
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
