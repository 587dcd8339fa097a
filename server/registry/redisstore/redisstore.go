package redisstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// Defaults for Options.
const (
	DefaultKeyPrefix       = "tether"
	DefaultEventMaxLen     = 100000
	DefaultDeviceRetention = 7 * 24 * time.Hour
)

// Limits of one call.
const (
	// scanFactor bounds the index entries one List call reads to
	// scanFactor × limit, however selective its filters are.
	scanFactor = 10
	// maxBlock bounds one XREAD BLOCK, so a cancelled ReadEvents returns
	// within about this long (go-redis does not interrupt a blocked read).
	maxBlock = time.Second
	// maxEventBatch caps ReadEvents' limit.
	maxEventBatch = 10000
	// appendTimeout bounds appending events after a successful script.
	appendTimeout = 2 * time.Second
)

// Options configures a Store. Zero values mean the defaults.
type Options struct {
	// URL of Redis: redis://[user:pass@]host:port[/db], rediss:// for TLS.
	// More addresses (?addr=h2:6379&addr=...) make it a Cluster client;
	// ?cluster=true makes one address a Cluster client; ?master_name=m makes
	// the addresses Sentinels. go-redis URL options (dial_timeout,
	// read_timeout, pool_size, ...) apply. Required.
	URL string
	// KeyPrefix starts every key ("tether"). It must not contain { or }.
	KeyPrefix string
	// EventMaxLen is the approximate length the event stream is trimmed to
	// (XADD MAXLEN ~).
	EventMaxLen int64
	// DeviceRetention is how long a device hash lives after its last write
	// (PEXPIRE refreshed by every script).
	DeviceRetention time.Duration
	// HistoryLen is how many ended sessions each device's history keeps
	// (default registry.DefaultHistoryLen, at most registry.MaxHistoryLen;
	// negative keeps none).
	HistoryLen int
	// HistoryRetention is how long a history lives after its newest entry
	// (default registry.DefaultHistoryRetention).
	HistoryRetention time.Duration
	// NeverConnectedRetention is how long a pre-registered record that never
	// connected lives (default registry.DefaultNeverConnectedRetention).
	NeverConnectedRetention time.Duration
	// Logger receives warnings (e.g. an event that could not be appended).
	Logger *slog.Logger
	// Pools sizes the separate connection pools of lease writes, API reads
	// and blocking event reads (see PoolSizes).
	Pools PoolSizes
}

// Store is the Redis registry.Store.
type Store struct {
	sent        *commandCounter
	errs        *errorCounter
	rdb         redis.UniversalClient // c.lease: every lease write
	c           clients
	prefix      string
	eventMaxLen int64
	retentionMS int64
	log         *slog.Logger

	historyLen       int
	historyMS        int64
	neverConnectedMS int64
}

var _ registry.Store = (*Store)(nil)

// New connects to Redis (one PING, bounded by ctx) and returns the store.
func New(ctx context.Context, opts Options) (*Store, error) {
	if opts.URL == "" {
		return nil, errors.New("redisstore: no URL")
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultKeyPrefix
	}
	if strings.ContainsAny(opts.KeyPrefix, "{}") {
		return nil, fmt.Errorf("redisstore: key prefix %q contains a brace (it would break the per-device hash tags)", opts.KeyPrefix)
	}
	if opts.EventMaxLen <= 0 {
		opts.EventMaxLen = DefaultEventMaxLen
	}
	if opts.DeviceRetention <= 0 {
		opts.DeviceRetention = DefaultDeviceRetention
	}
	if opts.DeviceRetention < time.Millisecond {
		opts.DeviceRetention = time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	switch {
	case opts.HistoryLen == 0:
		opts.HistoryLen = registry.DefaultHistoryLen
	case opts.HistoryLen < 0:
		opts.HistoryLen = 0
	case opts.HistoryLen > registry.MaxHistoryLen:
		return nil, fmt.Errorf("redisstore: history length %d: at most %d", opts.HistoryLen, registry.MaxHistoryLen)
	}
	if opts.HistoryRetention <= 0 {
		opts.HistoryRetention = registry.DefaultHistoryRetention
	}
	if opts.NeverConnectedRetention <= 0 {
		opts.NeverConnectedRetention = registry.DefaultNeverConnectedRetention
	}
	routeClientLogs(opts.Logger)
	c, err := newClients(opts.URL, opts.Pools)
	if err != nil {
		return nil, err
	}
	rdb := c.lease
	s := &Store{
		sent:        &commandCounter{},
		errs:        &errorCounter{},
		rdb:         rdb,
		c:           c,
		prefix:      opts.KeyPrefix,
		eventMaxLen: opts.EventMaxLen,
		retentionMS: opts.DeviceRetention.Milliseconds(),
		log:         opts.Logger,

		historyLen:       opts.HistoryLen,
		historyMS:        max(opts.HistoryRetention.Milliseconds(), 1),
		neverConnectedMS: max(opts.NeverConnectedRetention.Milliseconds(), 1),
	}
	c.addHook(s.sent)
	if err := s.Ping(ctx); err != nil {
		_ = c.close()
		return nil, fmt.Errorf("redisstore: %s: %w", redactURL(opts.URL), err)
	}
	if err := checkClusterMode(ctx, rdb); err != nil {
		_ = c.close()
		return nil, fmt.Errorf("redisstore: %s: %w", redactURL(opts.URL), err)
	}
	// Load the scripts now, so the first pipelined batch does not meet
	// NOSCRIPT (it would still recover; see runScripts).
	for _, sc := range allScripts {
		if err := sc.Load(ctx, rdb).Err(); err != nil {
			_ = c.close()
			return nil, fmt.Errorf("redisstore: %s: %w", redactURL(opts.URL), unavailable("script load", err))
		}
	}
	return s, nil
}

// checkClusterMode refuses a single-server client pointed at a Redis
// Cluster node: it would meet MOVED for most keys and the replica would
// never become ready. (A Cluster client is fine; so is a Redis without
// cluster support, which answers CLUSTER INFO with an error.)
func checkClusterMode(ctx context.Context, rdb redis.UniversalClient) error {
	c, ok := rdb.(*redis.Client)
	if !ok {
		return nil
	}
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil || !strings.Contains(info, "cluster_state:") {
		return nil
	}
	return errors.New("this Redis is a Cluster node, but the URL makes a single-server client (every key in another node's slots would answer MOVED): add ?cluster=true, or list the seed nodes with ?addr=host:port")
}

// Ping checks that Redis answers (for health checks).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return unavailable("ping", err)
	}
	return nil
}

// Client returns the underlying client (for tests and diagnostics).
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Close implements registry.Store.
func (s *Store) Close() error { return s.c.close() }

// Keys. The per-device hash carries the hash tag {d:<id>}: every script
// touches only that key, so scripts run on one Cluster slot.
func (s *Store) deviceKey(id string) string { return s.prefix + ":{d:" + id + "}" }
func (s *Store) indexKey() string           { return s.prefix + ":devices" }
func (s *Store) eventsKey() string          { return s.prefix + ":events" }
func (s *Store) nodeKey(node string) string { return s.prefix + ":node:" + node }
func (s *Store) retention() string          { return fmt.Sprint(s.retentionMS) }
func unavailable(op string, err error) error {
	return fmt.Errorf("redis %s (%s): %w: %w", op, errorKind(err), registry.ErrUnavailable, err)
}

// Claim implements registry.Store. Commands: one pipeline (read the current
// session's node, add the device to the index), EXISTS of that node's
// liveness key when there is a current session, the claim script, and one
// pipeline adding the device to the index again with XADD of the events.
func (s *Store) Claim(ctx context.Context, req registry.ClaimRequest) (registry.Claimed, error) {
	if req.DeviceID == "" {
		return registry.Claimed{}, errors.New("redisstore: claim: empty device id")
	}
	floor := registry.ClaimFloor(req)
	if floor >= maxLease {
		return registry.Claimed{}, fmt.Errorf("redisstore: claim %s: min lease %d is beyond 2^53", req.DeviceID, floor)
	}
	key := s.deviceKey(req.DeviceID)

	pipe := s.rdb.Pipeline()
	nodeCmd := pipe.HGet(ctx, key, fSNode)
	indexCmd := pipe.ZAdd(ctx, s.indexKey(), redis.Z{Member: req.DeviceID})
	_, _ = pipe.Exec(ctx) // errors are on the commands
	if err := nodeCmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
		return registry.Claimed{}, unavailable("claim", err)
	}
	if err := indexCmd.Err(); err != nil {
		return registry.Claimed{}, unavailable("claim", err)
	}
	curNode, alive := nodeCmd.Val(), "1"
	if curNode != "" {
		n, err := s.rdb.Exists(ctx, s.nodeKey(curNode)).Result()
		if err != nil {
			return registry.Claimed{}, unavailable("claim", err)
		}
		if n == 0 {
			alive = "0"
		}
	}

	hasInfo, infoJS, boot := "0", "", ""
	if req.Info != nil {
		hasInfo = "1"
		infoJS, boot = encodeInfo(req.Info)
	}
	res, err := claimScript.Run(ctx, s.rdb, []string{key, s.historyKey(req.DeviceID)},
		req.DeviceID, fmtUint(floor), req.Node, req.RemoteAddr, req.Mode.String(),
		hasInfo, infoJS, boot, fmtTime(req.Now), curNode, alive, s.retention(), req.ClaimID,
		s.historyLen, s.historyMS,
	).StringSlice()
	if err != nil {
		return registry.Claimed{}, unavailable("claim script", err)
	}
	if len(res) != 8 {
		return registry.Claimed{}, fmt.Errorf("redisstore: claim script returned %d values: %w", len(res), registry.ErrUnavailable)
	}
	out := registry.Claimed{Lease: parseUint(res[0]), Again: res[7] == "1"}
	if out.Lease == 0 {
		return registry.Claimed{}, fmt.Errorf("redisstore: claim script returned lease %q: %w", res[0], registry.ErrUnavailable)
	}
	if out.Again {
		// Applied by an earlier call whose reply was lost: the index entries
		// and the ONLINE event that call would have written after the
		// script were lost with the reply, so write them now. (The REPLACED
		// event of a session it replaced cannot be rebuilt; the record has
		// that end.)
		s.afterWrite(ctx, []string{req.DeviceID},
			[]registry.Event{{Type: tetherv1.EventType_EVENT_TYPE_ONLINE, DeviceID: req.DeviceID, Lease: out.Lease, Time: req.Now, Node: req.Node}},
			[]nodeEntry{{node: req.Node, id: req.DeviceID, lease: out.Lease}}, nil)
		return out, nil
	}
	var events []registry.Event
	if res[1] != "" {
		d := &registry.Disconnect{
			Lease:   parseUint(res[1]),
			Node:    res[2],
			Reason:  reasonOf(res[3]),
			Time:    parseTime(res[4]),
			Restart: restartOf(res[5]),
			Message: res[6],
		}
		out.Replaced = d
		typ := tetherv1.EventType_EVENT_TYPE_REPLACED
		if d.Reason != tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED {
			typ = tetherv1.EventType_EVENT_TYPE_OFFLINE
		}
		events = append(events, registry.Event{Type: typ, DeviceID: req.DeviceID, Lease: d.Lease, Reason: d.Reason, Time: d.Time, Node: d.Node})
	}
	events = append(events, registry.Event{Type: tetherv1.EventType_EVENT_TYPE_ONLINE, DeviceID: req.DeviceID, Lease: out.Lease, Time: req.Now, Node: req.Node})
	var unindex []nodeEntry
	if d := out.Replaced; d != nil && d.Node != "" {
		unindex = append(unindex, nodeEntry{node: d.Node, id: req.DeviceID, lease: d.Lease})
	}
	s.afterWrite(ctx, []string{req.DeviceID}, events, []nodeEntry{{node: req.Node, id: req.DeviceID, lease: out.Lease}}, unindex)
	return out, nil
}

// Touch implements registry.Store: one pipeline with one script call per
// touch. An entry that got an error reply (OOM, BUSY, READONLY, ...) is
// Unknown: it may or may not have applied, and it never ends a session.
func (s *Store) Touch(ctx context.Context, touches []registry.Touch) (registry.TouchResult, error) {
	var out registry.TouchResult
	if len(touches) == 0 {
		return out, nil
	}
	calls := make([]scriptCall, len(touches))
	for i, t := range touches {
		calls[i] = scriptCall{
			keys: []string{s.deviceKey(t.DeviceID)},
			args: []any{fmtUint(t.Lease), fmtTime(t.LastSeen), fmtDuration(t.RTT), s.retention()},
		}
	}
	cmds, err := s.runScripts(ctx, touchScript, calls)
	if err != nil {
		return out, unavailable("touch", err)
	}
	var firstErr error
	for i, cmd := range cmds {
		n, err := cmd.Int64()
		switch {
		case err != nil:
			s.errs.note(err)
			firstErr = cmp.Or(firstErr, err)
			out.Unknown = append(out.Unknown, touches[i])
		case n == 0:
			out.Stale = append(out.Stale, touches[i])
		case n == 2:
			out.Missing = append(out.Missing, touches[i])
		}
	}
	if firstErr != nil {
		s.log.Warn("registry touch: error replies; those sessions are kept and retried", "unknown", len(out.Unknown), "of", len(touches), "err", firstErr)
	}
	return out, nil
}

// UpdateInfo implements registry.Store.
func (s *Store) UpdateInfo(ctx context.Context, deviceID string, lease uint64, info *tetherv1.DeviceInfo) error {
	infoJS, boot := encodeInfo(info)
	res, err := updateInfoScript.Run(ctx, s.rdb, []string{s.deviceKey(deviceID)},
		fmtUint(lease), infoJS, boot, s.retention()).StringSlice()
	if err != nil {
		return unavailable("update info", err)
	}
	if len(res) < 2 || res[0] != "1" {
		return fmt.Errorf("update info of %s with lease %d: %w", deviceID, lease, refusal(res))
	}
	s.afterWrite(ctx, nil, []registry.Event{{Type: tetherv1.EventType_EVENT_TYPE_INFO_CHANGED, DeviceID: deviceID, Lease: lease, Time: time.Now(), Node: res[1]}}, nil, nil)
	return nil
}

// Release implements registry.Store.
func (s *Store) Release(ctx context.Context, deviceID string, end registry.Disconnect) error {
	return s.release(ctx, deviceID, "", end)
}

// ReleaseClaim implements registry.Store.
func (s *Store) ReleaseClaim(ctx context.Context, deviceID, claimID string, end registry.Disconnect) error {
	if claimID == "" {
		return fmt.Errorf("release claim of %s: no claim id: %w", deviceID, registry.ErrMissing)
	}
	end.Lease = 0
	return s.release(ctx, deviceID, claimID, end)
}

// release runs release.lua, matching the session by end.Lease or, when
// claimID is set, by the claim that made it.
func (s *Store) release(ctx context.Context, deviceID, claimID string, end registry.Disconnect) error {
	res, err := releaseScript.Run(ctx, s.rdb, []string{s.deviceKey(deviceID), s.historyKey(deviceID)},
		fmtUint(end.Lease), end.Node, end.Reason.String(), fmtTime(end.Time), end.Message, end.Restart.String(), s.retention(), claimID,
		s.historyLen, s.historyMS).StringSlice()
	if err != nil {
		return unavailable("release", err)
	}
	if len(res) < 3 || res[0] != "1" {
		return fmt.Errorf("release %s lease %d: %w", deviceID, end.Lease, refusal(res))
	}
	lease := parseUint(res[2])
	s.afterWrite(ctx, nil, []registry.Event{{Type: tetherv1.EventType_EVENT_TYPE_OFFLINE, DeviceID: deviceID, Lease: lease, Reason: end.Reason, Time: end.Time, Node: res[1]}},
		nil, []nodeEntry{{node: res[1], id: deviceID, lease: lease}})
	return nil
}

// refusal maps a script's refusal reply ({"0"} stale, {"2"} missing) to its
// error.
func refusal(res []string) error {
	if len(res) > 0 && res[0] == "2" {
		return registry.ErrMissing
	}
	return registry.ErrStaleLease
}

// Get implements registry.Store.
func (s *Store) Get(ctx context.Context, deviceID string) (registry.Record, error) {
	h, err := s.c.read.HGetAll(ctx, s.deviceKey(deviceID)).Result()
	if err != nil {
		return registry.Record{}, unavailable("get", err)
	}
	r, ok := decodeRecord(deviceID, h)
	if !ok {
		return registry.Record{}, fmt.Errorf("get %s: %w", deviceID, registry.ErrNotFound)
	}
	if r.Session == nil {
		return r, nil
	}
	alive, err := s.nodesAlive(ctx, []string{r.Session.Node})
	if err != nil {
		return registry.Record{}, unavailable("get", err)
	}
	return registry.Derive(r, alive[r.Session.Node]), nil
}

// List implements registry.Store. It reads the index (a sorted set of device
// ids, all with score 0, paged with ZRANGE BYLEX) in batches of up to limit
// ids, fetches each batch's hashes in one pipeline, and filters. It reads at
// most scanFactor × limit index entries per call: a selective filter can
// return a short page with Next set, and the caller continues from there.
// Index entries whose hash expired are removed on the way.
func (s *Store) List(ctx context.Context, q registry.ListQuery) (registry.ListPage, error) {
	limit := q.PageLimit()
	budget := scanFactor * limit
	after := q.After
	alive := map[string]bool{}
	var page registry.ListPage
	var gone []string
	defer func() { s.dropFromIndex(ctx, gone) }()
	for scanned := 0; scanned < budget; {
		start := "-"
		if after != "" {
			start = "(" + after
		}
		n := min(limit, budget-scanned)
		batch, err := s.c.read.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.indexKey(), Start: start, Stop: "+", ByLex: true, Count: int64(n)}).Result()
		if err != nil {
			return registry.ListPage{}, unavailable("list", err)
		}
		if len(batch) == 0 {
			return page, nil
		}
		scanned += len(batch)
		recs, expired, err := s.fetch(ctx, batch, alive)
		if err != nil {
			return registry.ListPage{}, unavailable("list", err)
		}
		gone = append(gone, expired...)
		for i, id := range batch {
			after = id
			r := recs[i]
			if r.DeviceID == "" {
				continue // expired or unreadable
			}
			if !q.Matches(r) {
				continue
			}
			page.Records = append(page.Records, r)
			if len(page.Records) == limit {
				if i < len(batch)-1 || len(batch) == n {
					page.Next = id // more may follow
				}
				return page, nil
			}
		}
		if len(batch) < n {
			return page, nil // the end of the index
		}
	}
	page.Next = after // budget spent: continue after the last id read
	return page, nil
}

// fetch reads the hashes of ids in one pipeline and derives presence with
// the liveness of their nodes (memoized in alive). A record that cannot be
// read comes back as a zero Record; gone lists the ids whose hash no longer
// exists (expired), as opposed to a key Redis refused to read as a hash.
func (s *Store) fetch(ctx context.Context, ids []string, alive map[string]bool) (recs []registry.Record, gone []string, err error) {
	pipe := s.c.read.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, s.deviceKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !isReplyError(err) {
		return nil, nil, err
	}
	recs = make([]registry.Record, len(ids))
	var unknown []string
	for i, id := range ids {
		if err := cmds[i].Err(); err != nil {
			s.log.Warn("registry device record unreadable; skipped", "device", id, "err", err)
			continue
		}
		r, ok := decodeRecord(id, cmds[i].Val())
		if !ok {
			gone = append(gone, id)
			continue
		}
		recs[i] = r
		if r.Session != nil {
			if _, known := alive[r.Session.Node]; !known {
				alive[r.Session.Node] = false
				unknown = append(unknown, r.Session.Node)
			}
		}
	}
	got, err := s.nodesAlive(ctx, unknown)
	if err != nil {
		return nil, nil, err
	}
	for n, a := range got {
		alive[n] = a
	}
	for i := range recs {
		if r := recs[i]; r.Session != nil {
			recs[i] = registry.Derive(r, alive[r.Session.Node])
		}
	}
	return recs, gone, nil
}

// nodesAlive checks the liveness keys of nodes in one pipeline.
func (s *Store) nodesAlive(ctx context.Context, nodes []string) (map[string]bool, error) {
	out := make(map[string]bool, len(nodes))
	if len(nodes) == 0 {
		return out, nil
	}
	pipe := s.c.read.Pipeline()
	cmds := make([]*redis.IntCmd, len(nodes))
	for i, n := range nodes {
		cmds[i] = pipe.Exists(ctx, s.nodeKey(n))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	for i, n := range nodes {
		out[n] = cmds[i].Val() > 0
	}
	return out, nil
}

// dropFromIndex removes index entries of expired device hashes. It cannot
// be atomic with the claims that create hashes (other hash slots), so it
// works with them: a claim ZADDs before and after its script, and this
// checks EXISTS, ZREMs, then checks EXISTS again and re-adds what exists by
// then. Whatever the interleaving, a device whose hash exists ends up in the
// index: if the second check ran before the claim's script, the claim's
// second ZADD came after this ZREM; otherwise the second check sees the hash.
func (s *Store) dropFromIndex(ctx context.Context, ids []string) {
	if len(ids) == 0 || ctx.Err() != nil {
		return
	}
	missing, err := s.missing(ctx, ids)
	if err != nil || len(missing) == 0 {
		return
	}
	rm := make([]any, len(missing))
	for i, id := range missing {
		rm[i] = id
	}
	if err := s.c.read.ZRem(ctx, s.indexKey(), rm...).Err(); err != nil {
		s.log.Debug("registry index cleanup failed", "err", err)
		return
	}
	still, err := s.missing(ctx, missing)
	if err != nil {
		still = nil // re-add all: a stale entry is harmless, a lost one is not
	}
	var back []string
	for _, id := range missing {
		if !slices.Contains(still, id) {
			back = append(back, id)
		}
	}
	if len(back) > 0 {
		if err := s.c.read.ZAdd(ctx, s.indexKey(), members(back)...).Err(); err != nil {
			s.log.Warn("registry: re-adding index entries failed", "devices", back, "err", err)
		}
	}
}

// missing returns the ids among ids whose device hash does not exist.
func (s *Store) missing(ctx context.Context, ids []string) ([]string, error) {
	pipe := s.c.read.Pipeline()
	cmds := make([]*redis.IntCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.Exists(ctx, s.deviceKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	var out []string
	for i, id := range ids {
		if cmds[i].Val() == 0 {
			out = append(out, id)
		}
	}
	return out, nil
}

// afterWrite runs the commands that follow a successful script, in one
// pipeline: ZADD of devices whose hash may have just been created (again
// after the ZADD before the script, see dropFromIndex) and XADD of the
// events. They are separate commands because the index and the stream are in
// other hash slots, so a crash or a Redis failure between the script and
// them loses the events while the state change stays: events are
// notifications, the device hashes are the truth. A failure is logged, not
// returned — the mutation did happen.
func (s *Store) afterWrite(ctx context.Context, index []string, events []registry.Event, held, unheld []nodeEntry) {
	if len(index) == 0 && len(events) == 0 && len(held) == 0 && len(unheld) == 0 {
		return
	}
	// Do not lose these to the caller's cancellation, but do not hang on a
	// dead Redis either.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), appendTimeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	if len(index) > 0 {
		pipe.ZAdd(ctx, s.indexKey(), members(index)...)
	}
	for _, e := range events {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: s.eventsKey(), MaxLen: s.eventMaxLen, Approx: true, Values: encodeEvent(e)})
	}
	for _, h := range held {
		pipe.ZAdd(ctx, s.nodeSessionsKey(h.node), redis.Z{Member: h.id, Score: float64(h.lease)})
	}
	for _, h := range unheld {
		zremIfScript.EvalSha(ctx, pipe, []string{s.nodeSessionsKey(h.node)}, h.id, fmtUint(h.lease))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		attrs := []any{"err", err, "events", len(events)}
		if len(events) > 0 {
			attrs = append(attrs, "device", events[0].DeviceID, "lease", events[0].Lease)
		}
		s.log.Warn("registry: writing the index or the event stream after a script failed; events lost", attrs...)
	}
}

func members(ids []string) []redis.Z {
	zs := make([]redis.Z, len(ids))
	for i, id := range ids {
		zs[i] = redis.Z{Member: id}
	}
	return zs
}

// ReadEvents implements registry.Store with XREAD (BLOCK while waiting, in
// slices of at most maxBlock so cancellation is noticed). Resuming after an
// id older than the oldest retained entry, or after any id when the stream is
// gone (Redis lost its data), fails with ErrEventsExpired.
func (s *Store) ReadEvents(ctx context.Context, after string, limit int, wait time.Duration) ([]registry.Event, error) {
	if limit <= 0 {
		limit = registry.DefaultListLimit
	}
	limit = min(limit, maxEventBatch)
	from := "0-0"
	if after != "" {
		id, ok := parseStreamID(after)
		if !ok {
			return nil, fmt.Errorf("resume after event %q: not an event id: %w", after, registry.ErrEventsExpired)
		}
		pipe := s.c.read.Pipeline()
		firstCmd := pipe.XRangeN(ctx, s.eventsKey(), "-", "+", 1)
		lastCmd := pipe.XRevRangeN(ctx, s.eventsKey(), "+", "-", 1)
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, unavailable("read events", err)
		}
		first, last := firstCmd.Val(), lastCmd.Val()
		if len(first) == 0 || len(last) == 0 {
			return nil, fmt.Errorf("resume after event %q: the event stream is gone: %w", after, registry.ErrEventsExpired)
		}
		if f, ok := parseStreamID(first[0].ID); ok && id.less(f) {
			return nil, fmt.Errorf("resume after event %q: the oldest retained is %s: %w", after, first[0].ID, registry.ErrEventsExpired)
		}
		if l, ok := parseStreamID(last[0].ID); ok && l.less(id) {
			// Above the newest entry: the stream was reset (Redis lost its
			// data) and this id belongs to the old one.
			return nil, fmt.Errorf("resume after event %q: the newest event is %s (the stream was reset): %w", after, last[0].ID, registry.ErrEventsExpired)
		}
		from = after
	}
	deadline := time.Now().Add(wait)
	for {
		block := time.Duration(-1) // no BLOCK argument: return at once
		if left := time.Until(deadline); wait > 0 && left >= time.Millisecond {
			block = min(left, maxBlock)
		}
		res, err := s.c.block.XRead(ctx, &redis.XReadArgs{Streams: []string{s.eventsKey(), from}, Count: int64(limit), Block: block}).Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, unavailable("read events", err)
		case len(res) > 0 && len(res[0].Messages) > 0:
			out := make([]registry.Event, len(res[0].Messages))
			for i, m := range res[0].Messages {
				out[i] = decodeEvent(m.ID, m.Values)
			}
			return out, nil
		}
		if block < 0 {
			return nil, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// LastEventID implements registry.Store.
func (s *Store) LastEventID(ctx context.Context) (string, error) {
	last, err := s.c.read.XRevRangeN(ctx, s.eventsKey(), "+", "-", 1).Result()
	if err != nil {
		return "", unavailable("last event id", err)
	}
	if len(last) == 0 {
		return "", nil
	}
	return last[0].ID, nil
}

// KeepNodeAlive implements registry.Store: SET <prefix>:node:<node> addr PX ttl.
func (s *Store) KeepNodeAlive(ctx context.Context, node, addr string, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("redisstore: keep node %s alive: ttl %v is below a millisecond", node, ttl)
	}
	if err := keepNodeScript.Run(ctx, s.rdb, []string{s.nodeKey(node)}, addr, ttl.Milliseconds()).Err(); err != nil {
		s.errs.note(err)
		return unavailable("keep node alive", err)
	}
	s.noteNode(ctx, node)
	return nil
}

// NodeAddr implements registry.Store.
func (s *Store) NodeAddr(ctx context.Context, node string) (string, error) {
	addr, err := s.rdb.Get(ctx, s.nodeKey(node)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", fmt.Errorf("node %s: %w", node, registry.ErrNotFound)
	case err != nil:
		return "", unavailable("node addr", err)
	}
	return addr, nil
}

// DropNode implements registry.Store.
func (s *Store) DropNode(ctx context.Context, node string) error {
	if err := s.rdb.Del(ctx, s.nodeKey(node)).Err(); err != nil {
		return unavailable("drop node", err)
	}
	return nil
}

// Remirror implements registry.Store: one ZADD of the devices to the index,
// one pipeline of remirror scripts, and one pipeline adding the applied ones
// to the index again (see dropFromIndex) with ONLINE events for the sessions
// that were not current already.
func (s *Store) Remirror(ctx context.Context, sessions []registry.Live) (registry.RemirrorResult, error) {
	var out registry.RemirrorResult
	var todo []registry.Live
	for _, l := range sessions {
		if l.DeviceID == "" || l.Lease == 0 || l.Lease > maxLease {
			out.Stale = append(out.Stale, l)
			continue
		}
		todo = append(todo, l)
	}
	if len(todo) == 0 {
		return out, nil
	}
	index := make([]string, len(todo))
	for i, l := range todo {
		index[i] = l.DeviceID
	}
	if err := s.rdb.ZAdd(ctx, s.indexKey(), members(index)...).Err(); err != nil {
		return out, unavailable("remirror", err)
	}
	calls := make([]scriptCall, len(todo))
	for i, l := range todo {
		hasInfo, infoJS, boot := "0", "", ""
		if l.Info != nil {
			hasInfo = "1"
			infoJS, boot = encodeInfo(l.Info)
		}
		calls[i] = scriptCall{
			keys: []string{s.deviceKey(l.DeviceID)},
			args: []any{l.DeviceID, fmtUint(l.Lease), l.Node, l.RemoteAddr, l.Mode.String(), hasInfo, infoJS, boot,
				fmtTime(l.ConnectedAt), fmtTime(l.LastSeen), fmtDuration(l.RTT), s.retention()},
		}
	}
	cmds, err := s.runScripts(ctx, remirrorScript, calls)
	if err != nil {
		return out, unavailable("remirror", err)
	}
	var events []registry.Event
	var applied []string
	var held []nodeEntry
	for i, cmd := range cmds {
		res, err := cmd.StringSlice()
		switch {
		case err != nil:
			s.errs.note(err)
			s.log.Warn("registry remirror: error reply; the session is kept and retried", "device", todo[i].DeviceID, "lease", todo[i].Lease, "err", err)
			out.Unknown = append(out.Unknown, todo[i])
			continue
		case len(res) == 0 || res[0] != "1":
			out.Stale = append(out.Stale, todo[i])
			continue
		}
		applied = append(applied, todo[i].DeviceID)
		held = append(held, nodeEntry{node: todo[i].Node, id: todo[i].DeviceID, lease: todo[i].Lease})
		if len(res) > 1 && res[1] == "1" {
			l := todo[i]
			events = append(events, registry.Event{Type: tetherv1.EventType_EVENT_TYPE_ONLINE, DeviceID: l.DeviceID, Lease: l.Lease, Time: l.ConnectedAt, Node: l.Node})
		}
	}
	s.afterWrite(ctx, applied, events, held, nil)
	return out, nil
}

// scriptCall is one script invocation of a batch.
type scriptCall struct {
	keys []string
	args []any
}

// runScripts runs one script for many keys in one pipeline of EVALSHA. When
// Redis lost its script cache (NOSCRIPT, e.g. after a restart), it loads the
// script and re-runs only the calls that were refused — they did not run, so
// this is safe. It returns one command per call; per-call reply errors (other
// than NOSCRIPT) are left on the commands for the caller, and err reports a
// failure of the connection.
func (s *Store) runScripts(ctx context.Context, script *redis.Script, calls []scriptCall) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(calls))
	pending := make([]int, len(calls))
	for i := range calls {
		pending[i] = i
	}
	for attempt := 0; len(pending) > 0; attempt++ {
		pipe := s.rdb.Pipeline()
		for _, i := range pending {
			cmds[i] = script.EvalSha(ctx, pipe, calls[i].keys, calls[i].args...)
		}
		_, err := pipe.Exec(ctx)
		var again []int
		for _, i := range pending {
			if e := cmds[i].Err(); e != nil && redis.HasErrorPrefix(e, "NOSCRIPT") {
				again = append(again, i)
			}
		}
		if err != nil && !isReplyError(err) {
			return nil, err
		}
		if len(again) == 0 {
			break
		}
		if attempt > 0 {
			return nil, fmt.Errorf("script still missing after SCRIPT LOAD: %w", cmds[again[0]].Err())
		}
		if err := script.Load(ctx, s.rdb).Err(); err != nil {
			return nil, err
		}
		pending = again
	}
	return cmds, nil
}

// isReplyError reports whether err is an error reply from Redis (as opposed
// to a connection failure).
func isReplyError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.Nil)
}
