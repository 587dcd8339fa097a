package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// The fleet views (registry.History, registry.Lifecycle, registry.Fleet);
// keys in docs/REDIS.md.

var (
	_ registry.History   = (*Store)(nil)
	_ registry.Lifecycle = (*Store)(nil)
	_ registry.Fleet     = (*Store)(nil)
)

// inventoryBatch is how many devices one inventory round trip reads.
const inventoryBatch = 1000

// historyKey is the device's history list; it shares the device hash's hash
// tag, so the scripts that end sessions write both in one slot.
func (s *Store) historyKey(id string) string { return s.prefix + ":{d:" + id + "}:h" }

// nodesKey is the sorted set of node names scored by their last renewal (ms).
func (s *Store) nodesKey() string { return s.prefix + ":nodes" }

// noteNode records the node's renewal in the node set (a separate command:
// another slot). A failure only makes Nodes less current.
func (s *Store) noteNode(ctx context.Context, node string) {
	if err := s.rdb.ZAdd(ctx, s.nodesKey(), redis.Z{Member: node, Score: float64(time.Now().UnixMilli())}).Err(); err != nil {
		s.log.Debug("registry: recording the node's renewal in the node set failed", "node", node, "err", err)
	}
}

// historyEntry is one history list element as the scripts write it.
type historyEntry struct {
	Lease     string `json:"lease"`
	Node      string `json:"node"`
	Connected string `json:"connected"`
	Ended     string `json:"ended"`
	Reason    string `json:"reason"`
	Restart   string `json:"restart"`
	RTT       string `json:"rtt_ns"`
	Message   string `json:"message"`
}

func decodeLabels(s string) map[string]string {
	if s == "" {
		return nil
	}
	var m map[string]string
	if json.Unmarshal([]byte(s), &m) != nil {
		return nil
	}
	return m
}

// History implements registry.History: one LRANGE.
func (s *Store) History(ctx context.Context, deviceID string, limit int) ([]registry.SessionEnd, error) {
	if limit <= 0 || limit > registry.MaxHistoryLen {
		limit = registry.MaxHistoryLen
	}
	raw, err := s.c.read.LRange(ctx, s.historyKey(deviceID), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, unavailable("history", err)
	}
	out := make([]registry.SessionEnd, 0, len(raw))
	for _, r := range raw {
		var e historyEntry
		if json.Unmarshal([]byte(r), &e) != nil {
			continue // unreadable: skipped, never an error
		}
		out = append(out, registry.SessionEnd{
			Lease:       parseUint(e.Lease),
			Node:        e.Node,
			ConnectedAt: parseTime(e.Connected),
			EndedAt:     parseTime(e.Ended),
			Reason:      reasonOf(e.Reason),
			Restart:     restartOf(e.Restart),
			RTT:         parseDuration(e.RTT),
			Message:     e.Message,
		})
	}
	return out, nil
}

// Delete implements registry.Lifecycle: HGET of the session's node, EXISTS of
// its liveness key, the delete script, then ZREM from the index and the
// node's session index.
func (s *Store) Delete(ctx context.Context, deviceID string) error {
	key := s.deviceKey(deviceID)
	curNode, err := s.rdb.HGet(ctx, key, fSNode).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return unavailable("delete", err)
	}
	alive := "1"
	if curNode != "" {
		n, err := s.rdb.Exists(ctx, s.nodeKey(curNode)).Result()
		if err != nil {
			return unavailable("delete", err)
		}
		if n == 0 {
			alive = "0"
		}
	}
	res, err := deleteScript.Run(ctx, s.rdb, []string{key, s.historyKey(deviceID)}, curNode, alive).StringSlice()
	if err != nil {
		return unavailable("delete script", err)
	}
	switch {
	case len(res) == 0 || res[0] == "0":
		return fmt.Errorf("delete %s: %w", deviceID, registry.ErrNotFound)
	case res[0] == "online":
		node := ""
		if len(res) > 2 {
			node = res[2]
		}
		return fmt.Errorf("delete %s: a session is current on node %s: %w", deviceID, node, registry.ErrOnline)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), appendTimeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	pipe.ZRem(ctx, s.indexKey(), deviceID)
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: s.eventsKey(), MaxLen: s.eventMaxLen, Approx: true,
		Values: encodeEvent(registry.Event{Type: tetherv1.EventType_EVENT_TYPE_DELETED, DeviceID: deviceID, Time: time.Now()})})
	if len(res) > 2 && res[2] != "" {
		zremIfScript.EvalSha(ctx, pipe, []string{s.nodeSessionsKey(res[2])}, deviceID, res[1])
	}
	if _, err := pipe.Exec(ctx); err != nil {
		// A leftover index entry is harmless (List skips and removes it).
		s.log.Warn("registry delete: cleaning the index failed", "device", deviceID, "err", err)
	}
	return nil
}

// PreRegister implements registry.Lifecycle: ZADD to the index, the
// preregister script, ZADD again (as Claim does; see dropFromIndex).
func (s *Store) PreRegister(ctx context.Context, deviceID string, labels map[string]string, now time.Time) (registry.Record, error) {
	if deviceID == "" {
		return registry.Record{}, errors.New("redisstore: pre-register: empty device id")
	}
	if err := s.rdb.ZAdd(ctx, s.indexKey(), redis.Z{Member: deviceID}).Err(); err != nil {
		return registry.Record{}, unavailable("pre-register", err)
	}
	if labels == nil {
		labels = map[string]string{}
	}
	js, err := json.Marshal(labels)
	if err != nil {
		return registry.Record{}, fmt.Errorf("pre-register %s: %w", deviceID, err)
	}
	n, err := preregScript.Run(ctx, s.rdb, []string{s.deviceKey(deviceID)}, deviceID, string(js), fmtTime(now), s.neverConnectedMS).Int64()
	if err != nil {
		return registry.Record{}, unavailable("pre-register script", err)
	}
	if n != 1 {
		return registry.Record{}, fmt.Errorf("pre-register %s: %w", deviceID, registry.ErrExists)
	}
	s.afterWrite(ctx, []string{deviceID}, []registry.Event{{Type: tetherv1.EventType_EVENT_TYPE_REGISTERED, DeviceID: deviceID, Time: now}}, nil, nil)
	return registry.Record{DeviceID: deviceID, Info: registry.MergeLabels(nil, labels)}, nil
}

// Inventory implements registry.Fleet with a bounded scan: the index is read
// in pages of inventoryBatch ids (ZRANGE BYLEX), each page's hashes with one
// pipeline of HMGET (only the fields counted), plus one EXISTS per distinct
// node. 100,000 devices take 100 pages: see docs/BENCHMARKS.md.
func (s *Store) Inventory(ctx context.Context, labelKey string) (registry.Inventory, error) {
	c := registry.NewCounter(labelKey, time.Now())
	alive := map[string]bool{}
	after := ""
	for {
		start := "-"
		if after != "" {
			start = "(" + after
		}
		ids, err := s.c.read.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.indexKey(), Start: start, Stop: "+", ByLex: true, Count: inventoryBatch}).Result()
		if err != nil {
			return registry.Inventory{}, unavailable("inventory", err)
		}
		if len(ids) == 0 {
			break
		}
		after = ids[len(ids)-1]
		pipe := s.c.read.Pipeline()
		cmds := make([]*redis.SliceCmd, len(ids))
		for i, id := range ids {
			cmds[i] = pipe.HMGet(ctx, s.deviceKey(id), fLease, fSLease, fSNode, fInfo, fPreLabels)
		}
		if _, err := pipe.Exec(ctx); err != nil && !isReplyError(err) {
			return registry.Inventory{}, unavailable("inventory", err)
		}
		recs := make([]registry.Record, 0, len(ids))
		var unknown []string
		for i, id := range ids {
			v, err := cmds[i].Result()
			if err != nil || len(v) != 5 || v[0] == nil {
				continue // expired (or unreadable): not counted
			}
			str := func(j int) string { x, _ := v[j].(string); return x }
			r := registry.Record{DeviceID: id, Lease: parseUint(str(0)),
				Info: registry.MergeLabels(decodeInfo(str(3)), decodeLabels(str(4)))}
			if l := parseUint(str(1)); l != 0 {
				r.Session = &registry.Session{Lease: l, Node: str(2)}
				if _, ok := alive[r.Session.Node]; !ok {
					alive[r.Session.Node] = false
					unknown = append(unknown, r.Session.Node)
				}
			}
			recs = append(recs, r)
		}
		got, err := s.nodesAlive(ctx, unknown)
		if err != nil {
			return registry.Inventory{}, unavailable("inventory", err)
		}
		for n, a := range got {
			alive[n] = a
		}
		for _, r := range recs {
			if r.Session != nil && !alive[r.Session.Node] {
				r.Session = nil
			}
			c.Add(r)
		}
		if len(ids) < inventoryBatch {
			break
		}
	}
	return c.Result(), nil
}

// maxNodes bounds the nodes Nodes lists.
const maxNodes = 1000

// Nodes implements registry.Fleet: ZREMRANGEBYSCORE of nodes older than
// registry.NodeMemory, ZRANGE of the rest, then one pipeline of GET (the
// liveness key) and ZCARD (the session index) per node.
func (s *Store) Nodes(ctx context.Context) ([]registry.NodeInfo, error) {
	cutoff := time.Now().Add(-registry.NodeMemory).UnixMilli()
	if err := s.c.read.ZRemRangeByScore(ctx, s.nodesKey(), "-inf", "("+strconv.FormatInt(cutoff, 10)).Err(); err != nil {
		return nil, unavailable("nodes", err)
	}
	zs, err := s.c.read.ZRangeWithScores(ctx, s.nodesKey(), 0, maxNodes-1).Result()
	if err != nil {
		return nil, unavailable("nodes", err)
	}
	pipe := s.c.read.Pipeline()
	addrs := make([]*redis.StringCmd, len(zs))
	counts := make([]*redis.IntCmd, len(zs))
	for i, z := range zs {
		name, _ := z.Member.(string)
		addrs[i] = pipe.Get(ctx, s.nodeKey(name))
		counts[i] = pipe.ZCard(ctx, s.nodeSessionsKey(name))
	}
	if len(zs) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, unavailable("nodes", err)
		}
	}
	out := make([]registry.NodeInfo, 0, len(zs))
	for i, z := range zs {
		name, _ := z.Member.(string)
		n := registry.NodeInfo{Name: name, Sessions: int(counts[i].Val()), LastRenewed: time.UnixMilli(int64(z.Score)).UTC()}
		if a, err := addrs[i].Result(); err == nil {
			n.Addr, n.Alive = a, true
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b registry.NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
