package redisstore

import (
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// How values are written to Redis. Everything is a readable string: times as
// RFC 3339 in UTC, enums by their proto names, info as proto JSON with the
// proto field names. Reading is forgiving: a field that does not parse reads
// as its zero value, never as an error or a panic.

// Device hash fields (docs/REDIS.md).
const (
	fID        = "id"
	fLease     = "lease"
	fFirstSeen = "first_seen"
	fInfo      = "info"
	fBootID    = "boot_id"

	fSLease     = "s_lease"
	fSNode      = "s_node"
	fSRemote    = "s_remote"
	fSMode      = "s_mode"
	fSConnected = "s_connected"
	fSLastSeen  = "s_last_seen"
	fSRTT       = "s_rtt_ns"

	fDLease   = "d_lease"
	fDNode    = "d_node"
	fDReason  = "d_reason"
	fDTime    = "d_time"
	fDMessage = "d_message"
	fDRestart = "d_restart"

	fPreLabels  = "pre_labels"
	fRegistered = "registered"
)

// maxLease: leases are computed in Lua, whose numbers are doubles.
const maxLease = 1<<53 - 1

var (
	infoJSON   = protojson.MarshalOptions{UseProtoNames: true}
	infoUnJSON = protojson.UnmarshalOptions{DiscardUnknown: true}
)

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

func fmtUint(v uint64) string { return strconv.FormatUint(v, 10) }

func parseUint(s string) uint64 {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0
	}
	return v
}

func fmtDuration(d time.Duration) string { return strconv.FormatInt(int64(d), 10) }

func parseDuration(s string) time.Duration {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0
	}
	return time.Duration(v)
}

// encodeInfo returns the info JSON and boot id to store; nil info stores "".
func encodeInfo(info *tetherv1.DeviceInfo) (string, string) {
	if info == nil {
		return "", ""
	}
	b, err := infoJSON.Marshal(info)
	if err != nil {
		return "", info.GetBootId()
	}
	return string(b), info.GetBootId()
}

func decodeInfo(s string) *tetherv1.DeviceInfo {
	if s == "" {
		return nil
	}
	info := &tetherv1.DeviceInfo{}
	if err := infoUnJSON.Unmarshal([]byte(s), info); err != nil {
		return nil
	}
	return info
}

func reasonOf(s string) tetherv1.DisconnectReason {
	return tetherv1.DisconnectReason(tetherv1.DisconnectReason_value[s])
}

func restartOf(s string) tetherv1.DeviceRestart {
	return tetherv1.DeviceRestart(tetherv1.DeviceRestart_value[s])
}

func modeOf(s string) tetherv1.LivenessMode {
	return tetherv1.LivenessMode(tetherv1.LivenessMode_value[s])
}

func eventTypeOf(s string) tetherv1.EventType {
	return tetherv1.EventType(tetherv1.EventType_value[s])
}

// decodeRecord turns a device hash into a record as stored (the session's
// node is not checked here). ok is false for an empty (missing) hash.
func decodeRecord(id string, h map[string]string) (r registry.Record, ok bool) {
	if len(h) == 0 {
		return registry.Record{}, false
	}
	r = registry.Record{
		DeviceID:  id,
		Info:      registry.MergeLabels(decodeInfo(h[fInfo]), decodeLabels(h[fPreLabels])),
		FirstSeen: parseTime(h[fFirstSeen]),
		Lease:     parseUint(h[fLease]),
	}
	if lease := parseUint(h[fSLease]); lease != 0 {
		r.Session = &registry.Session{
			Lease:       lease,
			Node:        h[fSNode],
			RemoteAddr:  h[fSRemote],
			ConnectedAt: parseTime(h[fSConnected]),
			LastSeen:    parseTime(h[fSLastSeen]),
			RTT:         parseDuration(h[fSRTT]),
			Mode:        modeOf(h[fSMode]),
		}
	}
	if lease := parseUint(h[fDLease]); lease != 0 {
		r.LastDisconnect = &registry.Disconnect{
			Lease:   lease,
			Node:    h[fDNode],
			Reason:  reasonOf(h[fDReason]),
			Time:    parseTime(h[fDTime]),
			Message: h[fDMessage],
			Restart: restartOf(h[fDRestart]),
		}
	}
	return r, true
}

// Event stream entry fields.
const (
	eType   = "type"
	eDevice = "device"
	eLease  = "lease"
	eReason = "reason"
	eTime   = "time"
	eNode   = "node"
)

func encodeEvent(e registry.Event) []any {
	return []any{
		eType, e.Type.String(),
		eDevice, e.DeviceID,
		eLease, fmtUint(e.Lease),
		eReason, e.Reason.String(),
		eTime, fmtTime(e.Time),
		eNode, e.Node,
	}
}

func decodeEvent(id string, v map[string]any) registry.Event {
	str := func(k string) string {
		s, _ := v[k].(string)
		return s
	}
	return registry.Event{
		ID:       id,
		Type:     eventTypeOf(str(eType)),
		DeviceID: str(eDevice),
		Lease:    parseUint(str(eLease)),
		Reason:   reasonOf(str(eReason)),
		Time:     parseTime(str(eTime)),
		Node:     str(eNode),
	}
}

// streamID is a parsed stream entry id "<ms>-<seq>".
type streamID struct{ ms, seq uint64 }

func parseStreamID(s string) (streamID, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			ms, err1 := strconv.ParseUint(s[:i], 10, 64)
			seq, err2 := strconv.ParseUint(s[i+1:], 10, 64)
			return streamID{ms, seq}, err1 == nil && err2 == nil
		}
	}
	ms, err := strconv.ParseUint(s, 10, 64)
	return streamID{ms, 0}, err == nil
}

func (a streamID) less(b streamID) bool {
	return a.ms < b.ms || a.ms == b.ms && a.seq < b.seq
}
