package deviceapi

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/feed"
	"github.com/tetherhq/tether/server/registry"
)

// watchBatch is how many events one catch-up read from the store returns at
// most.
const watchBatch = 256

// feedReadyTimeout bounds how long a new watch waits for the replica's event
// feed to know its position (it cannot while the registry is unreachable).
const feedReadyTimeout = 10 * time.Second

// Defaults of the watch limits in Config.
const (
	DefaultMaxWatchers       = 20000
	DefaultMaxWatchersPerKey = 5000
	DefaultMaxSnapshotReads  = 4
)

// validEventID accepts the event id shapes the stores issue (digits and
// dashes, e.g. Redis stream ids "1700000000000-3").
func validEventID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// watchSlots counts open watches per replica and per API key.
type watchSlots struct {
	maxTotal, maxPerKey int
	total               int
	perKey              map[string]int
}

// acquireWatch takes a watch slot for the caller, or refuses with
// RESOURCE_EXHAUSTED (HTTP 429 through the gateway).
func (s *Service) acquireWatch(ctx context.Context) (release func(), err error) {
	key := ""
	if s.cfg.KeyName != nil {
		key = s.cfg.KeyName(ctx)
	}
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	w := &s.watches
	if w.total >= w.maxTotal {
		s.wm.refused.WithLabelValues("replica").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "this replica already serves %d watch streams (its limit, --max-watchers); retry later or use another replica", w.total)
	}
	if key != "" && w.perKey[key] >= w.maxPerKey {
		s.wm.refused.WithLabelValues("api_key").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "API key %q already holds %d watch streams on this replica (the limit per key, --max-watchers-per-key); close some first", key, w.perKey[key])
	}
	w.total++
	if key != "" {
		w.perKey[key]++
	}
	return func() {
		s.watchMu.Lock()
		defer s.watchMu.Unlock()
		w.total--
		if key != "" {
			if w.perKey[key]--; w.perKey[key] <= 0 {
				delete(w.perKey, key)
			}
		}
	}, nil
}

// BearerKey returns the bearer token of an incoming call ("" if none), for
// Config.KeyName.
func BearerKey(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		v = strings.TrimSpace(v)
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			return strings.TrimSpace(v[7:])
		}
	}
	return ""
}

// storeRead runs one store read of a snapshot or a catch-up under the
// replica's bound on such reads, so that many watches opening at once queue
// here instead of filling the registry's read pool.
func (s *Service) storeRead(ctx context.Context, read func() error) error {
	select {
	case s.snapshotSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.snapshotSem }()
	return read()
}

// startFeed starts the replica's event feed on the first watch; it stops
// with Close.
func (s *Service) startFeed() {
	s.feedOnce.Do(func() { go s.feed.Run(s.closing) })
}

// Feed is the replica's event feed (its counters are exported as metrics).
func (s *Service) Feed() *feed.Feed { return s.feed }

// WatchDevices implements DeviceService: the resume point is fixed first, then
// the optional snapshot is sent, then every event after the resume point, so
// that no event between the snapshot and the live stream is lost. Live events
// come from the replica's one event feed (server/feed), not from a store read
// per watch.
func (s *Service) WatchDevices(req *tetherv1.WatchDevicesRequest, stream tetherv1.DeviceService_WatchDevicesServer) error {
	if s.cfg.WatchSendTimeout < 0 {
		return s.watch(stream.Context(), req, func(resp *tetherv1.WatchDevicesResponse, _ *feed.Item, _ bool) error {
			return stream.Send(resp)
		}, nil)
	}
	// The watch runs on a goroutine of its own and the handler waits for it
	// or for a Send that has taken longer than the timeout: a Send held by
	// HTTP/2 flow control (the client reads nothing) returns only when the
	// stream ends, and the handler's return is what ends it (grpc-go then
	// cancels the stream's context, which releases the Send).
	g := &sendGuard{stalled: make(chan struct{})}
	g.timer = time.AfterFunc(s.cfg.WatchSendTimeout, g.stall)
	g.timer.Stop()
	done := make(chan error, 1) // the watch goroutine never waits to report
	go func() {
		done <- s.watch(stream.Context(), req, func(resp *tetherv1.WatchDevicesResponse, _ *feed.Item, _ bool) error {
			if !g.start(s.cfg.WatchSendTimeout) {
				return errStalled
			}
			err := stream.Send(resp)
			g.timer.Stop()
			return err
		}, nil)
	}()
	select {
	case err := <-done:
		return err
	case <-g.stalled:
		return status.Errorf(codes.Unavailable, "watch devices: the client has read nothing for %v; reconnect and resume with after_event_id", s.cfg.WatchSendTimeout)
	}
}

// errStalled ends a watch whose handler has returned because a Send stalled.
var errStalled = status.Error(codes.Unavailable, "watch devices: a send stalled")

// sendGuard times the Sends of one WatchDevices stream: a Send that runs
// longer than the timeout closes stalled, and no Send starts after that, so
// none starts once the handler has returned.
type sendGuard struct {
	timer   *time.Timer
	stalled chan struct{}

	mu   sync.Mutex
	over bool // stalled is closed
}

// start arms the timer for a Send, or reports false when one has stalled.
func (g *sendGuard) start(timeout time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.over {
		return false
	}
	g.timer.Reset(timeout)
	return true
}

func (g *sendGuard) stall() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.over {
		g.over = true
		close(g.stalled)
	}
}

// Memo slots of feed.Item used by the watch paths.
const (
	memoResponse = iota // the *tetherv1.WatchDevicesResponse of the event
	memoLocal           // the in-process gateway's encoding (WatchLocal)
)

// LocalSend receives the messages of a WatchLocal stream in order. cache is
// nil for a message of this watcher alone (snapshot, heartbeat); for an event
// of the replica's feed, shared by every watcher, cache(encode) returns
// encode's result computed once for all of them. more says that further
// events are already queued (a writer may wait with its flush).
type LocalSend = func(resp *tetherv1.WatchDevicesResponse, cache func(encode func() []byte) []byte, more bool) error

// WatchLocal is WatchDevices for a caller in the same process (the in-process
// JSON gateway), without a gRPC stream in between: ctx must carry the
// caller's incoming metadata and be authorized as a WatchDevices call (see
// access.Policy.AuthorizeStream). The stream semantics, limits and errors are
// WatchDevices'; send is called from the calling goroutine only.
//
// write, if not nil, lets the replica's event feed write events to the client
// itself, from its fan-out goroutine, instead of waking the stream's goroutine
// (feed.Direct): it gets the lines of one batch of events (encode's results,
// computed once for every watcher like send's cache) and must write them
// without blocking, returning false when it cannot take them now (they are
// then queued and handed to send as usual). It is called while send is not
// running for an event, never concurrently with itself, and may be called
// concurrently with send for a heartbeat, so it and send must exclude each
// other.
func (s *Service) WatchLocal(ctx context.Context, req *tetherv1.WatchDevicesRequest, send LocalSend, encode LocalEncode, write LocalWrite) error {
	var direct func(*feed.Watcher, *directWrites)
	if write != nil && encode != nil {
		direct = func(w *feed.Watcher, last *directWrites) {
			var lines [][]byte // reused: the feed calls one watcher's Direct from one goroutine at a time
			w.SetDirect(func(evs []*feed.Item) bool {
				lines = lines[:0]
				for _, ev := range evs {
					lines = append(lines, localLine(ev, encode))
				}
				ok := write(lines)
				clear(lines)
				if ok {
					last.id.Store(&evs[len(evs)-1].ID)
					last.at.Store(time.Now().UnixNano())
				}
				return ok
			})
		}
	}
	return s.watch(ctx, req, func(resp *tetherv1.WatchDevicesResponse, it *feed.Item, more bool) error {
		if it == nil {
			return send(resp, nil, more)
		}
		return send(resp, func(encode func() []byte) []byte {
			return it.Memo(memoLocal, func() any { return encode() }).([]byte)
		}, more)
	}, direct)
}

// directWrites is what a watcher's feed.Direct wrote last: the event's id
// and when (unix ns).
type directWrites struct {
	id atomic.Pointer[string]
	at atomic.Int64
}

// LocalEncode returns the line of one event's message (WatchLocal).
type LocalEncode = func(resp *tetherv1.WatchDevicesResponse) []byte

// LocalWrite writes the lines of a batch of events without blocking, or
// returns false (WatchLocal).
type LocalWrite = func(lines [][]byte) bool

// localLine is an event's line for the in-process gateway, encoded once for
// every watcher (the same memo slot as WatchLocal's send cache).
func localLine(ev *feed.Item, encode LocalEncode) []byte {
	return ev.Memo(memoLocal, func() any { return encode(eventResponse(ev)) }).([]byte)
}

// eventResponse is the API message of a feed event, built once for every
// watcher.
func eventResponse(ev *feed.Item) *tetherv1.WatchDevicesResponse {
	return ev.Memo(memoResponse, func() any { return &tetherv1.WatchDevicesResponse{Event: eventProto(ev.Event)} }).(*tetherv1.WatchDevicesResponse)
}

// watch runs one watch stream, handing every message to emit: it (non-nil for
// an event of the feed, shared by every watcher) and more (further events
// queued) let emit reuse one encoding and batch its writes. direct, if not
// nil, sets the watcher's feed.Direct and records what it writes in last.
func (s *Service) watch(ctx context.Context, req *tetherv1.WatchDevicesRequest, emit func(resp *tetherv1.WatchDevicesResponse, it *feed.Item, more bool) error,
	direct func(w *feed.Watcher, last *directWrites)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopAfter := context.AfterFunc(s.closing, cancel)
	defer stopAfter()

	after := req.GetAfterEventId()
	if after != "" && !validEventID(after) {
		return status.Errorf(codes.InvalidArgument, "after_event_id: %q is not an event id this API issued", after)
	}
	release, err := s.acquireWatch(ctx)
	if err != nil {
		return err
	}
	defer release()
	s.metrics.WatcherDelta(1)
	defer s.metrics.WatcherDelta(-1)
	s.startFeed()

	closed := func(err error) error {
		if s.closing.Err() != nil {
			return status.Error(codes.Unavailable, "server is shutting down; reconnect and resume with after_event_id")
		}
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return err
	}
	if after == "" {
		rctx, rcancel := context.WithTimeout(ctx, feedReadyTimeout)
		pos, err := s.feed.Position(rctx)
		rcancel()
		if err != nil {
			return closed(status.Errorf(codes.Unavailable, "watch devices: the event feed has no position yet (the device registry is unreachable); retry later: %v", err))
		}
		// "" (no event yet) reads from the oldest retained event, which
		// is the first one to arrive after this point.
		after = pos
	}
	send := func(e *tetherv1.DeviceEvent) error {
		return emit(&tetherv1.WatchDevicesResponse{Event: e}, nil, false)
	}
	if req.GetIncludeSnapshot() {
		next := ""
		for {
			var page registry.ListPage
			err := s.storeRead(ctx, func() (err error) {
				page, err = s.store.List(ctx, registry.ListQuery{After: next, Limit: MaxPageSize})
				return err
			})
			if err != nil {
				return closed(storeErr("watch devices (snapshot)", err))
			}
			for _, r := range page.Records {
				e := &tetherv1.DeviceEvent{Type: tetherv1.EventType_EVENT_TYPE_SNAPSHOT, DeviceId: r.DeviceID, Device: s.device(r), Time: timestamppb.Now()}
				if r.Session != nil {
					e.LeaseId, e.Node = r.Session.Lease, r.Session.Node
				}
				if err := send(e); err != nil {
					return err
				}
			}
			if page.Next == "" {
				break
			}
			next = page.Next
		}
		if err := send(&tetherv1.DeviceEvent{Type: tetherv1.EventType_EVENT_TYPE_SNAPSHOT_END, Time: timestamppb.Now()}); err != nil {
			return err
		}
	} else {
		// A first heartbeat right away, so that HTTP clients behind the
		// gateway get their response headers without waiting for the
		// first event.
		if err := send(&tetherv1.DeviceEvent{Type: tetherv1.EventType_EVENT_TYPE_HEARTBEAT, Time: timestamppb.Now()}); err != nil {
			return err
		}
	}

	// Join the feed at after; a resume point older than its history is
	// caught up from the store first, one bounded read at a time.
	var w *feed.Watcher
	for w == nil {
		w, err = s.feed.Subscribe(ctx, after)
		switch {
		case err == nil:
		case errors.Is(err, feed.ErrNotRetained):
			var events []registry.Event
			err := s.storeRead(ctx, func() (err error) {
				events, err = s.store.ReadEvents(ctx, after, watchBatch, 0)
				return err
			})
			if err != nil {
				return closed(storeErr("watch devices", err))
			}
			if len(events) == 0 {
				return closed(status.Errorf(codes.Unavailable, "watch devices: cannot join the event feed after %s; resume with after_event_id=%s", after, after))
			}
			for _, ev := range events {
				if err := send(eventProto(ev)); err != nil {
					return err
				}
				after = ev.ID
			}
		case errors.Is(err, feed.ErrClosed):
			return closed(status.Error(codes.Unavailable, "server is shutting down; reconnect and resume with after_event_id"))
		default:
			return closed(storeErr("watch devices", err))
		}
	}
	defer w.Close()
	var lastDirect directWrites
	if direct != nil {
		direct(w, &lastDirect)
	}
	// resumeFrom is the id of the last event written, by this goroutine or
	// by the feed's Direct.
	resumeFrom := func() string {
		if d := lastDirect.id.Load(); d != nil && feed.CompareIDs(*d, after) > 0 {
			return *d
		}
		return after
	}
	unreported := 0 // events written by emit since the last flush (feed.Watcher.Wrote)

	heartbeat := time.NewTimer(s.cfg.WatchHeartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				switch w.Reason() {
				case feed.EndSlow:
					s.wm.ended.WithLabelValues("slow").Inc()
					return status.Errorf(codes.Unavailable, "watch devices: this watcher fell more than %d events behind; resume with after_event_id=%s", s.cfg.WatchBuffer, resumeFrom())
				case feed.EndResnapshot:
					s.wm.ended.WithLabelValues("resnapshot").Inc()
					return status.Errorf(codes.OutOfRange, "watch devices: %v; reopen the watch with include_snapshot=true", registry.ErrEventsExpired)
				}
				return closed(status.Error(codes.Unavailable, "server is shutting down; reconnect and resume with after_event_id"))
			}
			more := w.Pending() > 0
			if err := emit(eventResponse(ev), ev, more); err != nil {
				return err
			}
			unreported++
			if !more {
				w.Wrote(unreported)
				unreported = 0
				w.Taken() // written and flushed: the feed's fan-out may go on
			}
			after = ev.ID
			heartbeat.Reset(s.cfg.WatchHeartbeat)
		case <-heartbeat.C:
			if at := lastDirect.at.Load(); at != 0 {
				// The feed wrote an event directly: the stream has been
				// silent only since then.
				if quiet := time.Since(time.Unix(0, at)); quiet < s.cfg.WatchHeartbeat {
					heartbeat.Reset(s.cfg.WatchHeartbeat - quiet)
					continue
				}
			}
			if err := send(&tetherv1.DeviceEvent{Type: tetherv1.EventType_EVENT_TYPE_HEARTBEAT, Time: timestamppb.Now()}); err != nil {
				return err
			}
			heartbeat.Reset(s.cfg.WatchHeartbeat)
		case <-ctx.Done():
			return closed(status.FromContextError(ctx.Err()).Err())
		}
	}
}

func eventProto(ev registry.Event) *tetherv1.DeviceEvent {
	e := &tetherv1.DeviceEvent{
		EventId: ev.ID, Type: ev.Type, DeviceId: ev.DeviceID, LeaseId: ev.Lease, Reason: ev.Reason, Node: ev.Node,
	}
	if !ev.Time.IsZero() {
		e.Time = timestamppb.New(ev.Time)
	}
	return e
}
