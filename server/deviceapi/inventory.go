package deviceapi

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/session"
)

// Inventory reuse: counting scans the whole registry (1.4 s for 100,000
// devices on Redis, see docs/BENCHMARKS.md), so a replica computes
// it at most once per InventoryMaxAge per label key, one scan at a time,
// and keeps at most inventoryCacheKeys label keys.
const (
	InventoryMaxAge    = 30 * time.Second
	inventoryCacheKeys = 16
)

// fleetViews is the Service's inventory cache.
type fleetViews struct {
	scan  sync.Mutex // one scan at a time
	mu    sync.Mutex // guards cache
	cache map[string]registry.Inventory
}

// forget drops the cached counts (after a delete or a pre-registration).
func (f *fleetViews) forget() {
	f.mu.Lock()
	f.cache = nil
	f.mu.Unlock()
}

func (f *fleetViews) get(key string, now time.Time) (registry.Inventory, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	inv, ok := f.cache[key]
	if !ok || now.Sub(inv.At) >= InventoryMaxAge || now.Before(inv.At) {
		return registry.Inventory{}, false
	}
	return inv, true
}

func (f *fleetViews) put(key string, inv registry.Inventory) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cache == nil || len(f.cache) >= inventoryCacheKeys {
		f.cache = map[string]registry.Inventory{}
	}
	f.cache[key] = inv
}

func (s *Service) fleetCache() *fleetViews { return &s.fleet }

func (s *Service) fleetStore() (registry.Fleet, error) {
	f, ok := s.store.(registry.Fleet)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this registry cannot count devices or list nodes")
	}
	return f, nil
}

// GetInventory implements DeviceService.
func (s *Service) GetInventory(ctx context.Context, req *tetherv1.GetInventoryRequest) (*tetherv1.GetInventoryResponse, error) {
	key := req.GetLabelKey()
	if len(key) > session.MaxLabelKeyBytes || !utf8.ValidString(key) {
		return nil, status.Errorf(codes.InvalidArgument, "label_key: want at most %d bytes of UTF-8", session.MaxLabelKeyBytes)
	}
	f, err := s.fleetStore()
	if err != nil {
		return nil, err
	}
	c := s.fleetCache()
	inv, ok := c.get(key, time.Now())
	if !ok {
		c.scan.Lock()
		inv, ok = c.get(key, time.Now()) // another call may have just counted
		if !ok {
			inv, err = f.Inventory(ctx, key)
			if err == nil {
				c.put(key, inv)
			}
		}
		c.scan.Unlock()
		if err != nil {
			return nil, storeErr("inventory", err)
		}
	}
	return &tetherv1.GetInventoryResponse{
		Total: int64(inv.Total), Online: int64(inv.Online), Offline: int64(inv.Offline), NeverConnected: int64(inv.NeverConnected),
		ByAgentVersion: counts(inv.ByAgentVersion), ByOs: counts(inv.ByOS), ByNode: counts(inv.ByNode), ByLabel: counts(inv.ByLabel),
		LabelKey: inv.LabelKey, ComputedAt: timestamppb.New(inv.At),
	}, nil
}

// counts sorts a grouping largest first, then by value.
func counts(m map[string]int) []*tetherv1.Count {
	out := make([]*tetherv1.Count, 0, len(m))
	for v, n := range m {
		out = append(out, &tetherv1.Count{Value: v, Count: int64(n)})
	}
	slices.SortFunc(out, func(a, b *tetherv1.Count) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Value, b.Value))
	})
	return out
}

// ListNodes implements DeviceService.
func (s *Service) ListNodes(ctx context.Context, _ *tetherv1.ListNodesRequest) (*tetherv1.ListNodesResponse, error) {
	f, err := s.fleetStore()
	if err != nil {
		return nil, err
	}
	ns, err := f.Nodes(ctx)
	if err != nil {
		return nil, storeErr("nodes", err)
	}
	resp := &tetherv1.ListNodesResponse{Nodes: make([]*tetherv1.Node, 0, len(ns))}
	for _, n := range ns {
		pn := &tetherv1.Node{Name: n.Name, Address: n.Addr, Alive: n.Alive, Sessions: int64(n.Sessions)}
		if !n.LastRenewed.IsZero() {
			pn.LastRenewed = timestamppb.New(n.LastRenewed)
		}
		resp.Nodes = append(resp.Nodes, pn)
	}
	return resp, nil
}
