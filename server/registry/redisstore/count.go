package redisstore

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// commandCounter counts the commands this client sends (a pipeline of N
// commands counts N), so that the Redis cost of a replica can be measured
// from the client side: INFO commandstats on the server also counts the
// commands scripts run internally.
type commandCounter struct{ n atomic.Uint64 }

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook {
	return next
}

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(uint64(len(cmds)))
		return next(ctx, cmds)
	}
}

// CommandsSent is the number of commands this store has sent to Redis.
func (s *Store) CommandsSent() uint64 { return s.sent.n.Load() }
