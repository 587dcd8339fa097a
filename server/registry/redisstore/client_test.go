package redisstore

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestURLsMapToTheRightKindOfClient(t *testing.T) {
	cases := []struct {
		url  string
		kind string // "single", "cluster", "sentinel"
		addr []string
		tls  bool
	}{
		{"redis://127.0.0.1:6379", "single", []string{"127.0.0.1:6379"}, false},
		{"redis://:secret@10.0.0.1:6380/2?read_timeout=2s", "single", []string{"10.0.0.1:6380"}, false},
		{"rediss://cache.example:6380", "single", []string{"cache.example:6380"}, true},
		{"redis://h1:6379?addr=h2:6379&addr=h3:6379", "cluster", []string{"h1:6379", "h2:6379", "h3:6379"}, false},
		{"rediss://cfg.example:6379?cluster=true", "cluster", []string{"cfg.example:6379"}, true},
		{"redis://s1:26379?addr=s2:26379&master_name=main", "sentinel", nil, false},
	}
	for _, tc := range cases {
		c, err := newClient(tc.url, 0)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		switch cl := c.(type) {
		case *redis.ClusterClient:
			o := cl.Options()
			if tc.kind != "cluster" || strings.Join(o.Addrs, ",") != strings.Join(tc.addr, ",") || (o.TLSConfig != nil) != tc.tls || !o.ContextTimeoutEnabled {
				t.Errorf("%s: cluster client %v tls=%v; want %s %v tls=%v", tc.url, o.Addrs, o.TLSConfig != nil, tc.kind, tc.addr, tc.tls)
			}
		case *redis.Client:
			o := cl.Options()
			switch tc.kind {
			case "single":
				if o.Addr != tc.addr[0] || (o.TLSConfig != nil) != tc.tls || !o.ContextTimeoutEnabled {
					t.Errorf("%s: client %s tls=%v; want %v tls=%v", tc.url, o.Addr, o.TLSConfig != nil, tc.addr, tc.tls)
				}
			case "sentinel":
				if o.Addr != "FailoverClient" {
					t.Errorf("%s: client for %s; want a sentinel (failover) client", tc.url, o.Addr)
				}
			default:
				t.Errorf("%s: single client; want %s", tc.url, tc.kind)
			}
		default:
			t.Errorf("%s: unexpected client %T", tc.url, c)
		}
		_ = c.Close()
	}
}

func TestBadURLsAreRefusedWithoutLeakingThePassword(t *testing.T) {
	for _, u := range []string{
		"http://h:6379",
		"redis://:hunter2@h:6379?no_such_option=1",
		"redis://:hunter2@h:6379?addr=h2:6379&no_such_option=1",
		"redis://:hunter2@h:bad port",
	} {
		_, err := newClient(u, 0)
		if err == nil {
			t.Errorf("%s: accepted", u)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error leaks the password: %v", u, err)
		}
	}
}

func TestDocumentedURLOptionsAreAccepted(t *testing.T) {
	for _, tc := range []struct {
		url        string
		ctxTimeout bool
		skip       bool
	}{
		{"redis://h:6379?context_timeout_enabled=false", false, false},
		{"redis://h:6379?context_timeout_enabled=true", true, false},
		{"rediss://h:6379?skip_verify=true", true, true},
		{"rediss://h1:6379?addr=h2:6379&skip_verify=true&context_timeout_enabled=false", false, true},
		{"redis://h1:6379?cluster=true&context_timeout_enabled=false", false, false},
	} {
		c, err := newClient(tc.url, 0)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		var ctxT bool
		var tlsc *tls.Config
		switch cl := c.(type) {
		case *redis.ClusterClient:
			ctxT, tlsc = cl.Options().ContextTimeoutEnabled, cl.Options().TLSConfig
		case *redis.Client:
			ctxT, tlsc = cl.Options().ContextTimeoutEnabled, cl.Options().TLSConfig
		}
		if ctxT != tc.ctxTimeout || (tlsc != nil && tlsc.InsecureSkipVerify) != tc.skip {
			t.Errorf("%s: context timeouts %v, skip verify %v; want %v, %v", tc.url, ctxT, tlsc != nil && tlsc.InsecureSkipVerify, tc.ctxTimeout, tc.skip)
		}
		_ = c.Close()
	}
}
