package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/tetherhq/tether/server/registry"
)

// reply is an error reply as go-redis hands it over (it implements
// redis.Error).
type reply string

func (r reply) Error() string { return string(r) }
func (reply) RedisError()     {}

// Every error reply production Redis gives is classified by its code, one
// by one, and every one of them is an unknown outcome — never stale, never
// missing. (OOM, BUSY, READONLY and NOSCRIPT are also provoked on a real
// Redis in TestErrorRepliesAreUnknownOutcomes and
// TestScriptsRunAgainAfterRedisRestartsWithAnEmptyScriptCache.)
func TestErrorRepliesAreClassifiedOneByOne(t *testing.T) {
	cases := []struct {
		err  error
		kind string
	}{
		{reply("OOM command not allowed when used memory > 'maxmemory'."), "oom"},
		{reply("ERR Error running script (call to f_x): @user_script:19: OOM command not allowed when used memory > 'maxmemory'."), "oom"},
		{reply("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."), "busy"},
		{reply("READONLY You can't write against a read only replica."), "readonly"},
		{reply("LOADING Redis is loading the dataset in memory"), "loading"},
		{reply("MOVED 3999 127.0.0.1:6381"), "moved"},
		{reply("ASK 3999 127.0.0.1:6381"), "ask"},
		{reply("CLUSTERDOWN The cluster is down"), "clusterdown"},
		{reply("TRYAGAIN Multiple keys request during rehashing of slot"), "tryagain"},
		{reply("NOSCRIPT No matching script. Please use EVAL."), "noscript"},
		{reply("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), "masterdown"},
		{reply("WRONGTYPE Operation against a key holding the wrong kind of value"), "reply"},
		{context.DeadlineExceeded, "timeout"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, "connection"},
	}
	for _, c := range cases {
		if got := errorKind(c.err); got != c.kind {
			t.Errorf("errorKind(%q) = %q; want %q", c.err, got, c.kind)
		}
		err := unavailable("touch", c.err)
		if registry.OutcomeOf(err) != "unknown" || !errors.Is(err, registry.ErrUnavailable) {
			t.Errorf("%q: outcome %q; want unknown (ErrUnavailable)", c.err, registry.OutcomeOf(err))
		}
		if want := fmt.Sprintf("(%s)", c.kind); !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want the kind %s in the message", c.err, err, want)
		}
	}
}
