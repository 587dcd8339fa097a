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
func newClient(rawURL string) (redis.UniversalClient, error) {
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
		return redis.NewFailoverClient(opts), nil
	case q.Has("addr") || isTrue(cluster):
		opts, err := redis.ParseClusterURL(clean)
		if err != nil {
			return nil, fmt.Errorf("redisstore: cluster URL: %w", err)
		}
		opts.ContextTimeoutEnabled = ctxTimeouts
		insecureTLS(opts.TLSConfig)
		return redis.NewClusterClient(opts), nil
	default:
		opts, err := redis.ParseURL(clean)
		if err != nil {
			return nil, fmt.Errorf("redisstore: URL: %w", err)
		}
		opts.ContextTimeoutEnabled = ctxTimeouts
		insecureTLS(opts.TLSConfig)
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
