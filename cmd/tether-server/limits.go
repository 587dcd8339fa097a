package main

import (
	"flag"

	"github.com/tetherhq/tether/server"
	"github.com/tetherhq/tether/server/deviceapi"
	"github.com/tetherhq/tether/server/feed"
	"github.com/tetherhq/tether/server/registry/redisstore"
)

// limitFlags registers the flags of server.Limits (docs/SECURITY.md,
// "Limits on the operators' side"). Each is also TETHER_<FLAG>.
func limitFlags(fs *flag.FlagSet, l *server.Limits) {
	fs.IntVar(&l.MaxWatchers, "max-watchers", deviceapi.DefaultMaxWatchers, "open WatchDevices streams this replica serves; more get RESOURCE_EXHAUSTED (HTTP 429)")
	fs.IntVar(&l.MaxWatchersPerKey, "max-watchers-per-key", deviceapi.DefaultMaxWatchersPerKey, "open WatchDevices streams of one API key on this replica; more get RESOURCE_EXHAUSTED (HTTP 429)")
	fs.IntVar(&l.WatchBuffer, "watch-buffer", feed.DefaultBuffer, "events one watcher may fall behind before it is ended (it resumes from its last event); 8 bytes each")
	fs.DurationVar(&l.WatchSendTimeout, "watch-send-timeout", deviceapi.DefaultWatchSendTimeout, "end a gRPC WatchDevices stream whose client has read nothing for this long")
	fs.IntVar(&l.MaxSnapshotReads, "max-snapshot-reads", deviceapi.DefaultMaxSnapshotReads, "registry reads of watch snapshots and catch-ups running at once (more queue)")
	fs.IntVar(&l.MaxPageBytes, "max-page-bytes", deviceapi.DefaultMaxPageBytes, "encoded size bound of one ListDevices page (besides page_size)")
	fs.IntVar(&l.RedisPools.Lease, "redis-pool-lease", 0, "connections of the Redis pool for lease writes and node renewal (0 = the URL's pool_size or go-redis's 10 x GOMAXPROCS)")
	fs.IntVar(&l.RedisPools.Read, "redis-pool-read", 0, "connections of the Redis pool for API reads (0 = the URL's pool_size or go-redis's 10 x GOMAXPROCS)")
	fs.IntVar(&l.RedisPools.Block, "redis-pool-block", redisstore.DefaultBlockPool, "connections of the Redis pool for event stream reads (the event feed's XREAD BLOCK and watch catch-ups)")
	var hls uint
	fs.UintVar(&hls, "max-header-list-size", server.DefaultMaxHeaderListSize, "largest gRPC request header list in bytes (read before authentication)")
	fs.DurationVar(&l.IdleConnTimeout, "idle-conn-timeout", server.DefaultIdleConnTimeout, "close gRPC connections that have had no stream for this long (agents always hold one); negative = never")
	var spc uint
	fs.UintVar(&spc, "max-streams-per-conn", server.DefaultMaxStreamsPerConn, "concurrent gRPC streams per connection")
	fs.IntVar(&l.MaxConnsPerIP, "max-conns-per-ip", 0, "open connections per source IP on the gRPC and --http listeners; 0 = no cap")
	fs.DurationVar(&l.HTTPReadHeaderTimeout, "http-read-header-timeout", server.DefaultHTTPReadHeaderTimeout, "--http: time to read a request's headers")
	fs.DurationVar(&l.HTTPIdleTimeout, "http-idle-timeout", server.DefaultHTTPIdleTimeout, "--http: close keep-alive connections idle this long")
	fs.IntVar(&l.HTTPMaxHeaderBytes, "http-max-header-bytes", server.DefaultHTTPMaxHeaderBytes, "--http: largest request header block in bytes")
	// The uint flags are copied after parsing.
	postParse = append(postParse, func() {
		l.MaxHeaderListSize = uint32(min(hls, 1<<31))
		l.MaxStreamsPerConn = uint32(min(spc, 1<<31))
	})
}

// postParse runs after the flags are parsed.
var postParse []func()
