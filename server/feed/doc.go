// Package feed owns a replica's single reader of the registry's event
// stream and its in-memory fan-out to every WatchDevices stream (the shape of
// etcd's watchable store and of the Kubernetes API server's watch cache).
//
// One goroutine (Feed.Run) reads the store's events in batches and hands each
// batch to every subscribed Watcher through a bounded per-watcher buffer. The
// reader never blocks on a watcher: a watcher whose buffer is full is ended
// (EndSlow) after the events it already holds, so its client resumes from the
// last event it received. A bounded history of recent events lets a watcher
// that resumes from a recent event id join without touching the store; an
// older resume point gets ErrNotRetained and the caller catches up from the
// store itself (deviceapi bounds those reads). When the feed itself loses its
// place in the store (the events after its position were trimmed, or the
// store lost its data) every watcher is ended with EndResnapshot.
//
// A watcher whose writer can take events without blocking (Watcher.SetDirect:
// the in-process gateway's HTTP/1.1 watches) gets them written by the fan-out
// goroutine itself, one write per watcher and no goroutine woken, as long as
// it has no queued events left unwritten (Watcher.Wrote), so order holds.
// Other watchers are handed a batch a chunk at a time, and the fan-out waits
// until the chunk has written it (Watcher.Taken) or a short bound passes: the
// processors go idle between chunks, so a unary call's socket is noticed
// during a fan-out to thousands instead of waiting for the runtime's 10 ms
// network poll. A fan-out goes in subscription order, from a different
// watcher each time, so a client's connections opened together are written
// together. Events that reach the store during a fan-out join it (the
// watchers already served get them at once, the rest with the batch in one
// write) instead of waiting for it to end and taking a second one.
//
// With N watchers a replica therefore keeps one blocking read on the store,
// not N.
package feed
