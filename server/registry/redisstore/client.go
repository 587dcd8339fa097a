package redisstore

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// newClient maps a URL to a go-redis client:
//
//	redis://[user:pass@]host:port[/db][?opts]          one server (redis.ParseURL)
//	rediss://...                                       the same over TLS
//	redis://h1:6379?addr=h2:6379&addr=h3:6379          Redis Cluster, seed addresses (redis.ParseClusterURL)
//	redis://h1:6379?cluster=true                       Redis Cluster behind one address
//	redis://s1:26379?addr=s2:26379&master_name=mymaster  Sentinel: addresses are sentinels (redis.ParseFailoverURL)
//
// The options are go-redis's own URL parameters (dial_timeout, read_timeout,
// write_timeout, pool_size, max_retries, skip_verify, ...; see the go-redis
// ParseURL docs), plus two applied here for every form: skip_verify=true
// (rediss:// without certificate verification) and
// context_timeout_enabled=false (context deadlines then do not bound
// commands; by default they do, so a caller's timeout also bounds a hung
// Redis).
//
// poolSize, when above zero, replaces the URL's pool_size (and go-redis's
// default of 10 × GOMAXPROCS).
func newClient(rawURL string, poolSize int) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the url.Error would repeat the password
		}
		return nil, fmt.Errorf("redisstore: bad URL: %w", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redisstore: URL scheme %q: want redis:// or rediss://", u.Scheme)
	}
	q := u.Query()
	// Options go-redis's URL parsers do not all take: applied here.
	ctxTimeouts := true
	if v := q.Get("context_timeout_enabled"); v != "" {
		ctxTimeouts = isTrue(v)
	}
	skipVerify := isTrue(q.Get("skip_verify"))
	cluster := q.Get("cluster")
	for _, k := range []string{"cluster", "context_timeout_enabled", "skip_verify"} {
		q.Del(k)
	}
	u.RawQuery = q.Encode()
	clean := u.String()
	insecureTLS := func(c *tls.Config) {
		if c != nil && skipVerify {
			c.InsecureSkipVerify = true
		}
	}

	switch {
	case q.Has("master_name"):
		opts, err := redis.ParseFailoverURL(clean)
		if err != nil {
			return nil, fmt.Errorf("redisstore: sentinel URL: %w", err)
		}
		opts.ContextTimeoutEnabled = ctxTimeouts
		insecureTLS(opts.TLSConfig)
		if poolSize > 0 {
			opts.PoolSize = poolSize
		}
		return redis.NewFailoverClient(opts), nil
	case q.Has("addr") || isTrue(cluster):
		opts, err := redis.ParseClusterURL(clean)
		if err != nil {
			return nil, fmt.Errorf("redisstore: cluster URL: %w", err)
		}
		opts.ContextTimeoutEnabled = ctxTimeouts
		insecureTLS(opts.TLSConfig)
		if poolSize > 0 {
			opts.PoolSize = poolSize
		}
		return redis.NewClusterClient(opts), nil
	default:
		opts, err := redis.ParseURL(clean)
		if err != nil {
			return nil, fmt.Errorf("redisstore: URL: %w", err)
		}
		opts.ContextTimeoutEnabled = ctxTimeouts
		insecureTLS(opts.TLSConfig)
		if poolSize > 0 {
			opts.PoolSize = poolSize
		}
		return redis.NewClient(opts), nil
	}
}

func isTrue(s string) bool {
	switch strings.ToLower(s) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// redactURL hides the password of a URL for logs and errors.
func redactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// DefaultBlockPool is the size of the blocking-read pool: a replica has one
// event feed, so one blocking XREAD at a time, plus room for catch-up reads.
const DefaultBlockPool = 4

// PoolSizes sizes a Store's three go-redis clients, each with its own
// connection pool, so that one class of command never waits for a
// connection behind another:
//
//   - Lease: Claim, Release, Touch, UpdateInfo, Remirror, node liveness
//     (KeepNodeAlive, DropNode) and the token deny list. Devices and the
//     replica's own liveness depend on these.
//   - Read: Get, List, LastEventID, NodeAddr: the fleet API's reads.
//   - Block: XREAD of the event stream (BLOCK while waiting).
//
// Zero means the default: the URL's pool_size or go-redis's 10 ×
// GOMAXPROCS for Lease and Read, DefaultBlockPool for Block.
type PoolSizes struct {
	Lease, Read, Block int
}

// clients are the Store's go-redis clients, one per command class.
type clients struct {
	lease, read, block redis.UniversalClient
}

func newClients(rawURL string, sizes PoolSizes) (clients, error) {
	if sizes.Lease < 0 || sizes.Read < 0 || sizes.Block < 0 {
		return clients{}, fmt.Errorf("redisstore: pool sizes must not be negative: %+v", sizes)
	}
	if sizes.Block == 0 {
		sizes.Block = DefaultBlockPool
	}
	var c clients
	var err error
	if c.lease, err = newClient(rawURL, sizes.Lease); err != nil {
		return clients{}, err
	}
	if c.read, err = newClient(rawURL, sizes.Read); err != nil {
		_ = c.lease.Close()
		return clients{}, err
	}
	if c.block, err = newClient(rawURL, sizes.Block); err != nil {
		_ = c.lease.Close()
		_ = c.read.Close()
		return clients{}, err
	}
	return c, nil
}

func (c clients) named() map[string]redis.UniversalClient {
	return map[string]redis.UniversalClient{"lease": c.lease, "read": c.read, "block": c.block}
}

func (c clients) addHook(h redis.Hook) {
	for _, cl := range c.named() {
		cl.AddHook(h)
	}
}

func (c clients) close() error {
	return errors.Join(c.lease.Close(), c.read.Close(), c.block.Close())
}

// PoolStats returns the connection pool statistics of the store's clients
// by pool name (lease, read, block), for metrics.
func (s *Store) PoolStats() map[string]*redis.PoolStats {
	out := map[string]*redis.PoolStats{}
	for name, cl := range s.c.named() {
		out[name] = cl.PoolStats()
	}
	return out
}
