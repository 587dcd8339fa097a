package feed

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/server/registry"
)

// Source is the role of the registry the feed reads.
type Source = registry.Events

// Errors of Subscribe.
var (
	// ErrNotRetained: the resume point is older than the history the feed
	// keeps in memory; read the events after it from the store, then
	// subscribe again from the last one read.
	ErrNotRetained = errors.New("feed: resume point older than the in-memory history")
	// ErrClosed: the feed has stopped (the replica is shutting down).
	ErrClosed = errors.New("feed: closed")
)

// EndReason says why the feed ended a Watcher.
type EndReason int

// End reasons.
const (
	// EndNone: the watcher has not been ended by the feed.
	EndNone EndReason = iota
	// EndSlow: the watcher's buffer was full when an event arrived. The
	// events it holds are still delivered; its client resumes after the
	// last one.
	EndSlow
	// EndResnapshot: the feed lost its place in the store's events (they
	// were trimmed past it, or the store lost its data): the client must
	// take a new snapshot.
	EndResnapshot
	// EndClosed: the feed stopped.
	EndClosed
)

// Defaults for Config.
const (
	DefaultBuffer  = 512
	DefaultHistory = 10000
	DefaultBatch   = 1000
	DefaultWait    = 5 * time.Second
)

// Config configures a Feed. Zero values mean the defaults.
type Config struct {
	// Buffer is how many events one watcher may have queued before it is
	// ended as slow. Default 512 (a watcher's buffer holds pointers to
	// events shared by every watcher: 4 KiB each).
	Buffer int
	// History is how many recent events are kept for watchers resuming
	// from a recent event id. Default 10000.
	History int
	// Batch is the most events one store read returns. Default 1000.
	Batch int
	// Wait is how long one store read waits for an event. Default 5s.
	Wait time.Duration
	// RetryMin and RetryMax bound the back-off after a failed store read.
	// Defaults 100ms and 5s.
	RetryMin, RetryMax time.Duration
	Logger             *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Buffer <= 0 {
		c.Buffer = DefaultBuffer
	}
	if c.History <= 0 {
		c.History = DefaultHistory
	}
	if c.Batch <= 0 {
		c.Batch = DefaultBatch
	}
	if c.Wait <= 0 {
		c.Wait = DefaultWait
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(5*time.Second, c.RetryMin)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Feed is one replica's reader of the event stream. Create it with New and
// start Run; Subscribe may be called before Run has read anything (it waits
// until the feed knows its position).
type Feed struct {
	cfg Config
	src Source

	ready     chan struct{} // closed once the start position is known
	readyOnce sync.Once

	mu       sync.Mutex
	last     string  // id of the newest event read ("" = none yet)
	history  []*Item // contiguous events ending at last, at most cfg.History
	watchers map[*Watcher]struct{}
	closed   bool
	scratch  []*Watcher // publish's list of watchers (owned by Run's goroutine)
	direct   []directTarget
	rest     []*Watcher // publish's scratch lists for one chunk

	subs    uint64 // subscriptions so far (Watcher.seq)
	fanouts uint64 // publish's fan-outs so far (owned by Run's goroutine)

	directs atomic.Uint64 // batches written by a watcher's Direct
	joins   atomic.Uint64 // fan-outs that new events joined (publish)

	reads, events, slow, resnapshots atomic.Uint64
	handoffTimeouts                  atomic.Uint64
	readErrors                       atomic.Uint64
	healthy                          atomic.Bool
}

// New returns a feed over src; call Run to start reading.
func New(src Source, cfg Config) *Feed {
	return &Feed{cfg: cfg.withDefaults(), src: src, ready: make(chan struct{}), watchers: map[*Watcher]struct{}{}}
}

// Item is one event as every watcher receives it: the same Item is shared by
// all of them, so read it, never modify it. Memo caches what watchers derive
// from the event (its API message, its JSON line), computed by the first
// watcher that needs it, so that N watchers pay for one encoding.
type Item struct {
	registry.Event
	memo [MemoSlots]atomic.Pointer[any]
}

// MemoSlots is how many derived forms an Item caches; each user of Memo owns
// one slot index below it.
const MemoSlots = 2

// Memo returns the value cached in slot, computing it on first use. Two
// watchers racing on an empty slot may both compute it; one result wins and
// both return an equal value, so compute must be deterministic.
func (it *Item) Memo(slot int, compute func() any) any {
	if v := it.memo[slot].Load(); v != nil {
		return *v
	}
	v := compute()
	if it.memo[slot].CompareAndSwap(nil, &v) {
		return v
	}
	return *it.memo[slot].Load()
}

// Watcher is one subscription. Receive from Events until it is closed, then
// Reason says why (EndNone after the watcher's own Close).
type Watcher struct {
	f      *Feed
	ch     chan *Item
	skip   string // events up to this id are not delivered (a resume point the feed had not reached)
	ended  bool   // guarded by f.mu
	reason atomic.Int32
	hand   atomic.Pointer[handoff] // the fan-out chunk waiting for this watcher to take its events

	seq       uint64       // order of subscription (Feed.subs), guarded by f.mu
	direct    Direct       // guarded by f.mu (SetDirect)
	unwritten atomic.Int32 // events queued on ch and not yet reported by Wrote
}

// Direct writes a batch of events straight to a watcher's client from the
// feed's fan-out goroutine, instead of queueing them for the watcher's own
// goroutine. It must not block: it returns false when it cannot take the
// batch now (its writer is busy), and the batch is then queued as usual. It
// is only called while the watcher has no queued events left unwritten (see
// Wrote), so events stay in order.
type Direct func(evs []*Item) bool

// SetDirect lets the fan-out write the watcher's events with d (nil: queue
// them, the default). A watcher that sets it must report its queued events
// with Wrote once they are written.
func (w *Watcher) SetDirect(d Direct) {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	w.direct = d
}

// Wrote tells the feed that n events received from Events have been written
// to the client (flushed, not just buffered): once every queued event is,
// the fan-out may write the next ones directly (SetDirect).
func (w *Watcher) Wrote(n int) { w.unwritten.Add(-int32(n)) }

// Taken tells the feed that the watcher has written out every event it was
// handed (its queue is empty), so that the fan-out can go on to the next
// watchers. A watcher that does not call it costs the fan-out handoffWait
// once: it is not waited for again until it does.
func (w *Watcher) Taken() {
	if h := w.hand.Swap(nil); h != nil {
		h.take()
	}
}

// Events delivers the watcher's events in order; it is closed when the
// watcher ends.
// The events are shared by every watcher: read them, never modify them.
func (w *Watcher) Events() <-chan *Item { return w.ch }

// Pending is how many events are queued for the watcher (a writer may wait
// with its flush while more are queued).
func (w *Watcher) Pending() int { return len(w.ch) }

// Reason is why the feed ended the watcher (valid once Events is closed).
func (w *Watcher) Reason() EndReason { return EndReason(w.reason.Load()) }

// Close unsubscribes the watcher; it is safe to call more than once.
func (w *Watcher) Close() {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	w.f.endLocked(w, EndNone)
}

func (f *Feed) endLocked(w *Watcher, r EndReason) {
	if w.ended {
		return
	}
	w.ended = true
	w.reason.Store(int32(r))
	delete(f.watchers, w)
	close(w.ch)
	w.Taken()
}

// Subscribe returns a watcher that receives every event after the event id
// after; "" means from now. A resume point older than the in-memory history
// gets ErrNotRetained; one the store no longer holds gets an error wrapping
// registry.ErrEventsExpired.
func (f *Feed) Subscribe(ctx context.Context, after string) (*Watcher, error) {
	select {
	case <-f.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f.mu.Lock()
	last := f.last
	f.mu.Unlock()
	if after != "" && after != last && CompareIDs(after, last) > 0 {
		// The client saw an event this feed has not read yet (e.g. from
		// another replica). Check with the store that the id is one it
		// holds, then skip up to it.
		if _, err := f.src.ReadEvents(ctx, after, 1, 0); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	var replay []*Item
	w := &Watcher{f: f}
	switch {
	case after == "" || after == f.last:
	case CompareIDs(after, f.last) > 0:
		w.skip = after
	case len(f.history) > 0 && CompareIDs(after, f.history[0].ID) >= 0:
		i := len(f.history)
		for i > 0 && CompareIDs(f.history[i-1].ID, after) > 0 {
			i--
		}
		replay = f.history[i:]
	default:
		return nil, ErrNotRetained
	}
	w.ch = make(chan *Item, f.cfg.Buffer+len(replay))
	for _, e := range replay {
		w.ch <- e
	}
	w.unwritten.Store(int32(len(replay)))
	f.subs++
	w.seq = f.subs
	f.watchers[w] = struct{}{}
	return w, nil
}

// Run reads the store's events until ctx ends, then ends every watcher
// (EndClosed) and refuses new ones.
func (f *Feed) Run(ctx context.Context) {
	defer f.shutdown()
	backoff := f.cfg.RetryMin
	retry := func() bool {
		f.healthy.Store(false)
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, f.cfg.RetryMax)
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for !f.start(ctx) {
		if !retry() {
			return
		}
	}
	for ctx.Err() == nil {
		f.mu.Lock()
		pos := f.last
		f.mu.Unlock()
		evs, err := f.src.ReadEvents(ctx, pos, f.cfg.Batch, f.cfg.Wait)
		f.reads.Add(1)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, registry.ErrEventsExpired):
			f.cfg.Logger.Warn("event feed lost its place in the registry's events; every watcher must re-snapshot", "after", pos, "err", err)
			f.resnapshots.Add(1)
			f.reset()
			for !f.start(ctx) {
				if !retry() {
					return
				}
			}
			continue
		case err != nil:
			f.readErrors.Add(1)
			f.cfg.Logger.Warn("event feed: reading the registry's events failed; retrying", "err", err, "retry_in", backoff)
			if !retry() {
				return
			}
			continue
		}
		f.healthy.Store(true)
		backoff = f.cfg.RetryMin
		if len(evs) > 0 {
			f.publish(ctx, evs)
		}
	}
}

// start fixes the position at the store's newest event.
func (f *Feed) start(ctx context.Context) bool {
	id, err := f.src.LastEventID(ctx)
	if err != nil {
		f.readErrors.Add(1)
		f.cfg.Logger.Warn("event feed: cannot read the registry's last event id; retrying", "err", err)
		return false
	}
	f.mu.Lock()
	f.last = id
	f.mu.Unlock()
	f.healthy.Store(true)
	f.readyOnce.Do(func() { close(f.ready) })
	return true
}

// reset ends every watcher with EndResnapshot and forgets the history.
func (f *Feed) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for w := range f.watchers {
		f.endLocked(w, EndResnapshot)
	}
	f.history = nil
}

func (f *Feed) shutdown() {
	f.readyOnce.Do(func() { close(f.ready) })
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for w := range f.watchers {
		f.endLocked(w, EndClosed)
	}
}

// fanoutChunk is how many watchers publish hands an event batch to at a
// time (direct watchers are written first, the rest are woken; the fan-out
// also looks for events to join between chunks). Each woken watcher writes
// to its client (tens of microseconds).
// publish then waits until those watchers have taken their events (or
// handoffWait has passed) before it hands the batch to the next chunk:
//   - handing a batch to ten thousand watchers at once would queue every
//     other goroutine of the replica (a unary call, a lease renewal) behind
//     all of them;
//   - yielding between chunks (runtime.Gosched) keeps the fan-out runnable
//     on the global run queue, so the scheduler never runs out of work and
//     never polls the network: a unary call's socket is then noticed only by
//     the runtime's monitor, every 10 ms (docs/PERFORMANCE.md);
//   - waiting for the chunk leaves the processors idle for a moment after
//     each chunk, and an idle processor polls the network first.
//
// 64 was measured best of 16, 64 and 256 at 10,000 watchers: smaller chunks
// cost CPU (a processor parks and is woken per chunk), larger ones bring the
// unary calls' wait back.
const fanoutChunk = 64

// handoffWait bounds publish's wait for one chunk's watchers to take their
// events: a watcher whose client stopped reading blocks in its write, and
// must not hold up the others for long.
const handoffWait = 2 * time.Millisecond

// directTarget is a watcher of a chunk whose Direct publish tries first.
type directTarget struct {
	w     *Watcher
	write Direct
}

// handoff counts the watchers of one chunk that have not taken their events
// yet, plus one for publish itself until it has handed them all out.
type handoff struct {
	left atomic.Int32
	done chan struct{}
}

func (h *handoff) take() {
	if h.left.Add(-1) == 0 {
		close(h.done)
	}
}

// joinPoll is how often, at most, a fan-out in progress looks for events
// that arrived after it started (see publish).
const joinPoll = 5 * time.Millisecond

// publish appends evs to the history and offers them to every watcher
// without blocking: a watcher without room is ended as slow. Watchers are
// served in chunks of fanoutChunk, one chunk after another (see
// fanoutChunk); a watcher that subscribes meanwhile starts after evs (or
// replays them from the history), one that leaves meanwhile is skipped.
//
// Events that reach the store while the fan-out runs join it (a device's
// OFFLINE right after its ONLINE, a storm): every joinPoll the fan-out reads
// what has arrived, once per fan-out. The watchers it had already served, and
// those that subscribed in between, get the new events at once (a shorter
// pass); the watchers it had not reached yet then get both batches in one
// write. Without the join the new events would wait for the whole fan-out and
// then take a second one: a join costs fewer writes, never more.
func (f *Feed) publish(ctx context.Context, evs []registry.Event) {
	ptrs := f.items(evs)
	f.mu.Lock()
	f.appendLocked(ptrs)
	snap := f.subs
	targets := f.scratch[:0]
	for w := range f.watchers {
		targets = append(targets, w)
	}
	f.mu.Unlock()
	f.order(targets)
	f.fanOut(ctx, targets, ptrs, snap, true)
	clear(targets)
	f.scratch = targets
}

// order puts the watchers in the order of their subscriptions, rotated to
// start at a different place for each fan-out. Watchers that subscribed
// together are usually the connections of one client that opened them
// together: written one after the other, they wake that client once for all
// of them instead of once each (the map's random order did; measured in
// docs/PERFORMANCE.md). The rotation spreads the end of the fan-out, and its
// latency, over every watcher in turn.
func (f *Feed) order(targets []*Watcher) {
	if len(targets) < 2 {
		return
	}
	slices.SortFunc(targets, func(a, b *Watcher) int { return cmp.Compare(a.seq, b.seq) })
	f.fanouts++
	k := int(f.fanouts * 7919 % uint64(len(targets))) // a prime step: consecutive fan-outs start far apart
	slices.Reverse(targets[:k])
	slices.Reverse(targets[k:])
	slices.Reverse(targets) // rotated left by k
}

// items wraps evs as shared Items.
func (f *Feed) items(evs []registry.Event) []*Item {
	f.events.Add(uint64(len(evs)))
	items := make([]Item, len(evs))
	ptrs := make([]*Item, len(evs))
	for i := range evs {
		items[i].Event = evs[i]
		ptrs[i] = &items[i]
	}
	return ptrs
}

// appendLocked makes ptrs the newest events: the history and the position
// new watchers start from.
func (f *Feed) appendLocked(ptrs []*Item) {
	f.last = ptrs[len(ptrs)-1].ID
	f.history = append(f.history, ptrs...)
	if over := len(f.history) - f.cfg.History; over > 0 {
		// Copy down rather than reslice so the backing array does not grow
		// without bound.
		n := copy(f.history, f.history[over:])
		clear(f.history[n:])
		f.history = f.history[:n]
	}
}

// fanOut hands batch to list, a chunk at a time. With join it also reads,
// every joinPoll and once at most, the events that reached the store since
// (see publish): they go at once to list[:i] (served already) and to the
// watchers that subscribed after snap, then with batch to the rest of list.
func (f *Feed) fanOut(ctx context.Context, list []*Watcher, batch []*Item, snap uint64, join bool) {
	var wait *time.Timer
	polled := time.Now()
	for i := 0; i < len(list); i += fanoutChunk {
		if join && i > 0 && time.Since(polled) >= joinPoll {
			polled = time.Now()
			f.mu.Lock()
			pos := f.last
			f.mu.Unlock()
			if evs, err := f.src.ReadEvents(ctx, pos, f.cfg.Batch, 0); err == nil && len(evs) > 0 {
				join = false
				f.reads.Add(1)
				f.joins.Add(1)
				extra := f.items(evs)
				served := list[:i:i] // appending copies
				f.mu.Lock()
				f.appendLocked(extra)
				for w := range f.watchers {
					if w.seq > snap {
						served = append(served, w)
					}
				}
				f.mu.Unlock()
				f.fanOut(ctx, served, extra, 0, false)
				batch = append(batch[:len(batch):len(batch)], extra...)
			}
		}
		// Watchers that write directly (SetDirect) and have nothing queued
		// get the batch from this goroutine, outside the lock: one write
		// each, no goroutine woken. The rest are queued, and waited for.
		direct, queue := f.direct[:0], f.rest[:0]
		f.mu.Lock()
		for _, w := range list[i:min(i+fanoutChunk, len(list))] {
			if w.direct != nil && !w.ended && w.skip == "" && w.unwritten.Load() == 0 {
				direct = append(direct, directTarget{w, w.direct})
			} else {
				queue = append(queue, w)
			}
		}
		f.mu.Unlock()
		queue = f.writeDirect(direct, batch, queue)
		h := &handoff{done: make(chan struct{})}
		h.left.Store(1)
		f.mu.Lock()
		for _, w := range queue {
			// The hand-off is set before the events are queued, so that a
			// watcher that writes them at once finds it. A watcher still
			// writing an earlier batch (an earlier wait gave up on it: its
			// client is not reading) is not waited for again, so a stalled
			// client costs the fan-out one handoffWait in all, not one per
			// event; its buffer ends it as slow in time.
			h.left.Add(1)
			mine := w.hand.CompareAndSwap(nil, h)
			if !mine {
				h.left.Add(-1) // never the last: publish holds one
			}
			if !f.offerLocked(w, batch) && mine && w.hand.CompareAndSwap(h, nil) {
				h.take() // nothing was queued for it: do not wait
			}
		}
		f.mu.Unlock()
		clear(direct)
		clear(queue)
		f.direct, f.rest = direct[:0], queue[:0]
		h.take()
		select {
		case <-h.done:
			continue // nothing queued to wait for
		default:
		}
		if wait == nil {
			wait = time.NewTimer(handoffWait)
		} else {
			wait.Reset(handoffWait)
		}
		select {
		case <-h.done:
		case <-wait.C:
			f.handoffTimeouts.Add(1)
		case <-ctx.Done(): // shutting down: hand out the rest without waiting
		}
	}
	if wait != nil {
		wait.Stop()
	}
}

// writeDirect writes batch to the direct watchers of one chunk and appends
// those that refused to queue. It runs on the fan-out's goroutine only: the
// other processors stay free for the replica's other work (a unary call, a
// lease renewal), which then needs no pause of the fan-out to be served.
// (Splitting the writes over every processor was measured: it delayed the
// replica's other work and made the fan-out slower, not faster;
// docs/PERFORMANCE.md.)
func (f *Feed) writeDirect(direct []directTarget, batch []*Item, queue []*Watcher) []*Watcher {
	for _, d := range direct {
		if d.write(batch) {
			f.directs.Add(1)
		} else {
			queue = append(queue, d.w)
		}
	}
	return queue
}

// offerLocked queues evs for w, or ends it as slow when its buffer is full.
// It reports whether w got an event and is still subscribed.
func (f *Feed) offerLocked(w *Watcher, evs []*Item) (queued bool) {
	for _, e := range evs {
		if w.ended {
			return false
		}
		if w.skip != "" {
			if CompareIDs(e.ID, w.skip) <= 0 {
				continue
			}
			w.skip = ""
		}
		select {
		case w.ch <- e:
			w.unwritten.Add(1)
			queued = true
		default:
			f.slow.Add(1)
			f.endLocked(w, EndSlow)
			return false
		}
	}
	return queued && !w.ended
}

// Stats are the feed's counters since it started.
type Stats struct {
	Watchers    int
	Reads       uint64 // store reads
	Events      uint64 // events read from the store
	Slow        uint64 // watchers ended because their buffer was full
	Resnapshots uint64 // times the feed lost its place and ended every watcher
	ReadErrors  uint64
	// HandoffTimeouts counts the fan-out's waits for a chunk of watchers
	// that ended at handoffWait (a watcher of the chunk did not write its
	// events in time: its client is slow or stalled).
	HandoffTimeouts uint64
	// Directs counts event batches a watcher's Direct wrote from the
	// fan-out (no goroutine woken, nothing queued).
	Directs uint64
	// Joins counts fan-outs that events arriving meanwhile joined.
	Joins   uint64
	Healthy bool // the last store read succeeded
}

// Stats returns the feed's counters.
func (f *Feed) Stats() Stats {
	f.mu.Lock()
	n := len(f.watchers)
	f.mu.Unlock()
	return Stats{Watchers: n, Reads: f.reads.Load(), Events: f.events.Load(), Slow: f.slow.Load(),
		Resnapshots: f.resnapshots.Load(), ReadErrors: f.readErrors.Load(), HandoffTimeouts: f.handoffTimeouts.Load(), Directs: f.directs.Load(), Joins: f.joins.Load(), Healthy: f.healthy.Load()}
}

// CompareIDs orders event ids of the shape both stores issue ("<a>-<b>",
// numeric parts): -1, 0 or +1. "" is before every id. Ids of another shape
// compare as strings.
func CompareIDs(a, b string) int {
	if a == b {
		return 0
	}
	if a == "" {
		return -1
	}
	if b == "" {
		return 1
	}
	a1, a2, okA := parseID(a)
	b1, b2, okB := parseID(b)
	if !okA || !okB {
		return strings.Compare(a, b)
	}
	switch {
	case a1 < b1:
		return -1
	case a1 > b1:
		return 1
	case a2 < b2:
		return -1
	case a2 > b2:
		return 1
	}
	return 0
}

func parseID(id string) (uint64, uint64, bool) {
	x, y, found := strings.Cut(id, "-")
	a, err := strconv.ParseUint(x, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if !found {
		return a, 0, true
	}
	b, err := strconv.ParseUint(y, 10, 64)
	return a, b, err == nil
}

// Position returns the id of the newest event the feed has read ("" = the
// store had none), waiting until the feed knows it.
func (f *Feed) Position(ctx context.Context) (string, error) {
	select {
	case <-f.ready:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return "", ErrClosed
	}
	return f.last, nil
}
