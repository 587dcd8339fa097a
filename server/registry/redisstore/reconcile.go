package redisstore

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tetherhq/tether/server/registry"
)

// nodeEntry is one member of a node's session index.
type nodeEntry struct {
	node  string
	id    string
	lease uint64
}

// nodeSessionsKey is the per-node session index: a sorted set of the
// device ids whose record names the node, scored by lease. It is written
// after the per-device scripts (it lives in another hash slot), so it can
// lag or lead the device hashes; Reconcile treats it as a hint and checks
// the hashes before it acts.
func (s *Store) nodeSessionsKey(node string) string { return s.prefix + ":node:" + node + ":sessions" }

// reconcileScan is the ZSCAN page size of Reconcile.
const reconcileScan = 1000

// Reconcile implements registry.Store. Commands: ZSCAN of the node's
// session index (one per 1,000 entries), one pipeline of HMGETs for the
// entries that differ from held, one release script per orphan, and one
// pipeline fixing the index. In the steady state (index == held) that is
// ceil(n/1000) commands per call.
func (s *Store) Reconcile(ctx context.Context, node string, held []registry.Held, orphan func(deviceID string, lease uint64) bool) (registry.Reconciled, error) {
	var out registry.Reconciled
	key := s.nodeSessionsKey(node)
	indexed := map[string]uint64{}
	var cursor uint64
	for {
		kv, next, err := s.rdb.ZScan(ctx, key, cursor, "", reconcileScan).Result()
		if err != nil {
			return out, unavailable("reconcile scan", err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			score, _ := strconv.ParseFloat(kv[i+1], 64)
			indexed[kv[i]] = uint64(score)
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	holds := make(map[string]uint64, len(held))
	for _, h := range held {
		holds[h.DeviceID] = h.Lease
	}
	// Probe every device whose index entry and held lease differ.
	var probe []string
	for id, l := range indexed {
		if holds[id] != l {
			probe = append(probe, id)
		}
	}
	for id := range holds {
		if _, ok := indexed[id]; !ok { // (a differing entry is in probe already)
			probe = append(probe, id)
		}
	}
	if len(probe) == 0 {
		return out, nil
	}
	slices.Sort(probe)
	out.Checked = len(probe)
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(probe))
	for i, id := range probe {
		cmds[i] = pipe.HMGet(ctx, s.deviceKey(id), fLease, fSLease, fSNode)
	}
	if _, err := pipe.Exec(ctx); err != nil && !isReplyError(err) {
		return out, unavailable("reconcile probe", err)
	}
	var add, drop []nodeEntry
	for i, id := range probe {
		vals, err := cmds[i].Result()
		if err != nil {
			s.errs.note(err)
			continue // unknown: the next pass looks again
		}
		highest, sLease, sNode := parseUint(str(vals[0])), parseUint(str(vals[1])), str(vals[2])
		h, isHeld := holds[id]
		if isHeld {
			switch {
			case highest > h:
				out.Stale = append(out.Stale, registry.Held{DeviceID: id, Lease: h})
			case sLease == h && sNode == node:
				add = append(add, nodeEntry{node: node, id: id, lease: h})
			default: // gone, older, or not showing the held lease
				out.Missing = append(out.Missing, registry.Held{DeviceID: id, Lease: h})
			}
		}
		if l, ok := indexed[id]; ok && (!isHeld || l != h) {
			drop = append(drop, nodeEntry{node: node, id: id, lease: l})
		}
		if sNode != node || sLease == 0 || (isHeld && sLease == h) {
			continue
		}
		// The record says node holds sLease, and node does not.
		if !orphan(id, sLease) {
			continue
		}
		end := registry.Orphaned(&registry.Session{Lease: sLease, Node: node}, time.Now())
		err = s.Release(ctx, id, end)
		switch {
		case err == nil:
			out.Orphaned = append(out.Orphaned, end)
			out.OrphanedIDs = append(out.OrphanedIDs, id)
		case errors.Is(err, registry.ErrUnavailable):
			return out, err
		}
	}
	if len(add) > 0 || len(drop) > 0 {
		pipe := s.rdb.Pipeline()
		for _, e := range add {
			pipe.ZAdd(ctx, key, redis.Z{Member: e.id, Score: float64(e.lease)})
		}
		for _, e := range drop {
			zremIfScript.EvalSha(ctx, pipe, []string{key}, e.id, fmtUint(e.lease))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			s.log.Debug("registry: fixing the node session index failed; the next pass retries", "node", node, "err", err)
		}
	}
	return out, nil
}

func str(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// Epoch implements registry.Epocher: the run ids of the Redis servers
// behind the client (every master of a Cluster), sorted and joined. It
// changes when any of them restarts or a failover promotes another
// server — the moments acknowledged writes can be lost — so the caller
// re-verifies its sessions at once instead of at the next mirror interval.
func (s *Store) Epoch(ctx context.Context) (string, error) {
	var mu sync.Mutex
	var ids []string
	one := func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "server").Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
				mu.Lock()
				ids = append(ids, v)
				mu.Unlock()
			}
		}
		return nil
	}
	var err error
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, one)
	case *redis.Client:
		err = one(ctx, c)
	default:
		return "", nil
	}
	if err != nil {
		return "", unavailable("epoch", err)
	}
	slices.Sort(ids)
	return strings.Join(ids, ","), nil
}

// SweepIndex implements registry.IndexSweeper: it checks up to n entries of
// the device index, starting after cursor, and removes those whose device
// hash expired (see dropFromIndex). It returns where to continue ("" after
// the end). Only one replica sweeps a given page: a short lock key (SET NX)
// shared by the replicas skips the page when another replica holds it.
func (s *Store) SweepIndex(ctx context.Context, cursor string, n int) (string, int, error) {
	ok, err := s.c.read.SetNX(ctx, s.prefix+":sweep:"+cursor, "1", time.Minute).Result()
	if err != nil {
		return cursor, 0, unavailable("sweep index", err)
	}
	start := "-"
	if cursor != "" {
		start = "(" + cursor
	}
	ids, err := s.c.read.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.indexKey(), Start: start, Stop: "+", ByLex: true, Count: int64(n)}).Result()
	if err != nil {
		return cursor, 0, unavailable("sweep index", err)
	}
	if len(ids) == 0 {
		return "", 0, nil
	}
	next := ids[len(ids)-1]
	if len(ids) < n {
		next = ""
	}
	if !ok {
		return next, 0, nil // another replica sweeps this page
	}
	gone, err := s.missing(ctx, ids)
	if err != nil {
		return cursor, 0, unavailable("sweep index", err)
	}
	s.dropFromIndex(ctx, gone)
	return next, len(gone), nil
}

// errorCounter counts error replies and failures by kind.
type errorCounter struct {
	mu     sync.Mutex
	byKind map[string]uint64
}

func (c *errorCounter) note(err error) {
	if err == nil {
		return
	}
	k := errorKind(err)
	c.mu.Lock()
	if c.byKind == nil {
		c.byKind = map[string]uint64{}
	}
	c.byKind[k]++
	c.mu.Unlock()
}

// ErrorsByKind returns how many error replies and failures of each kind
// (errorKind) the store has seen.
func (s *Store) ErrorsByKind() map[string]uint64 {
	s.errs.mu.Lock()
	defer s.errs.mu.Unlock()
	out := make(map[string]uint64, len(s.errs.byKind))
	for k, v := range s.errs.byKind {
		out[k] = v
	}
	return out
}

// replyKinds are the error replies classified explicitly. Each means the
// same to the registry — outcome unknown — but operators need to tell them
// apart.
var replyKinds = []string{"OOM", "BUSY", "READONLY", "LOADING", "MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "NOSCRIPT", "MASTERDOWN", "NOREPLICAS", "NOPERM", "NOAUTH"}

// errorKind names the kind of a Redis failure: an error reply's code in
// lower case (oom, busy, readonly, loading, moved, ask, clusterdown,
// tryagain, noscript, masterdown, ...), "timeout", "canceled",
// "connection", or "other". A script error carries the reply of the
// command that failed inside it ("ERR Error running script ... OOM ..."),
// which is classified by that code.
func errorKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if isReplyError(err) {
		msg := err.Error()
		for _, k := range replyKinds {
			if strings.HasPrefix(msg, k+" ") || strings.HasPrefix(msg, k) && len(msg) == len(k) ||
				strings.Contains(msg, "-"+k+" ") || strings.Contains(msg, ": "+k+" ") || strings.Contains(msg, " "+k+" command") {
				return strings.ToLower(k)
			}
		}
		return "reply"
	}
	var oe *net.OpError
	if errors.As(err, &oe) || errors.Is(err, redis.ErrClosed) || strings.Contains(err.Error(), "connection") || errors.Is(err, redis.ErrPoolTimeout) {
		return "connection"
	}
	return "other"
}
