package redisstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"
)

// slogPrinter routes go-redis's own log lines (pool dial failures, cluster
// reloads, ...) through slog, so they carry the replica's format, level
// and attributes instead of bypassing them on stderr.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(ctx context.Context, format string, v ...any) {
	p.log.WarnContext(ctx, "redis client: "+fmt.Sprintf(format, v...), "component", "go-redis")
}

var setLoggerOnce sync.Once

// routeClientLogs sets go-redis's process-wide logger once, to the first
// store's logger.
func routeClientLogs(log *slog.Logger) {
	setLoggerOnce.Do(func() { redis.SetLogger(slogPrinter{log}) })
}
