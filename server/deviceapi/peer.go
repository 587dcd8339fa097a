package deviceapi

import (
	"context"
	"errors"

	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/access"
	"github.com/tetherhq/tether/server/registry"
)

// forwardSlack is added to a forwarded command's deadline so that the
// owner's own DEADLINE_EXCEEDED answer arrives before the hop gives up.
const forwardSlack = 2 * time.Second

// Peers holds client connections to other replicas, one per address.
type Peers struct {
	opts []grpc.DialOption

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// NewPeers returns a pool dialing with opts (transport credentials and
// per-RPC credentials for peer authentication).
func NewPeers(opts ...grpc.DialOption) *Peers {
	return &Peers{opts: opts, conns: map[string]*grpc.ClientConn{}}
}

func (p *Peers) client(addr string) (tetherv1.PeerServiceClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return tetherv1.NewPeerServiceClient(c), nil
	}
	c, err := grpc.NewClient(addr, p.opts...)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return tetherv1.NewPeerServiceClient(c), nil
}

// Close closes every connection.
func (p *Peers) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns {
		c.Close()
		delete(p.conns, a)
	}
}

// owner resolves the peer that holds r's session.
func (s *Service) owner(ctx context.Context, r registry.Record) (tetherv1.PeerServiceClient, error) {
	node := r.Session.Node
	if s.cfg.Peers == nil {
		return nil, status.Errorf(codes.Unavailable, "device %s is held by node %s and peer routing is disabled on node %s", r.DeviceID, node, s.node())
	}
	addr, err := s.store.NodeAddr(ctx, node)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, status.Errorf(codes.Unavailable, "device %s was held by node %s, which stopped renewing its registry lease (crashed?); the device is offline until it reconnects", r.DeviceID, node)
	}
	if err != nil {
		return nil, storeErr("node "+node, err)
	}
	return s.cfg.Peers.client(addr)
}

// relayErr keeps the owner's status but says which hop failed when the peer
// itself was unreachable.
func relayErr(node string, err error) error {
	st := status.Convert(err)
	if st.Code() == codes.Unavailable && !isOwnerAnswer(st.Message()) {
		return status.Errorf(codes.Unavailable, "owner node %s unreachable: %s", node, st.Message())
	}
	return err
}

func isOwnerAnswer(msg string) bool {
	// Answers the owner itself produced name the device; transport failures
	// do not.
	return len(msg) >= 7 && msg[:7] == "device "
}

func (s *Service) forwardCommand(ctx context.Context, req *tetherv1.SendCommandRequest, r registry.Record, timeout time.Duration) (*tetherv1.SendCommandResponse, error) {
	peer, err := s.owner(ctx, r)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+forwardSlack)
	defer cancel()
	ctx = access.ToPeer(ctx, r.Session.Node) // the proof is bound to the owner
	resp, err := peer.ForwardCommand(ctx, &tetherv1.ForwardCommandRequest{Request: req, LeaseId: r.Session.Lease})
	if err != nil {
		return nil, relayErr(r.Session.Node, err)
	}
	return resp.GetResponse(), nil
}

func (s *Service) forwardDisconnect(ctx context.Context, req *tetherv1.DisconnectDeviceRequest, r registry.Record) (*tetherv1.DisconnectDeviceResponse, error) {
	peer, err := s.owner(ctx, r)
	if err != nil {
		return nil, err
	}
	ctx = access.ToPeer(ctx, r.Session.Node) // the proof is bound to the owner
	resp, err := peer.ForwardDisconnect(ctx, &tetherv1.ForwardDisconnectRequest{Request: req, LeaseId: r.Session.Lease})
	if err != nil {
		return nil, relayErr(r.Session.Node, err)
	}
	return resp.GetResponse(), nil
}

// PeerServer implements tetherv1.PeerServiceServer on top of the Service's
// local paths.
type PeerServer struct {
	tetherv1.UnimplementedPeerServiceServer
	s *Service
}

// PeerServer returns the PeerService implementation for this replica.
func (s *Service) PeerServer() *PeerServer { return &PeerServer{s: s} }

// ForwardCommand implements PeerService.
func (p *PeerServer) ForwardCommand(ctx context.Context, req *tetherv1.ForwardCommandRequest) (*tetherv1.ForwardCommandResponse, error) {
	in := req.GetRequest()
	if in == nil || req.GetLeaseId() == 0 {
		return nil, status.Error(codes.InvalidArgument, "request and lease_id are required")
	}
	if err := validID(in.GetDeviceId()); err != nil {
		return nil, err
	}
	if err := ValidateCommand(in.GetName(), in.GetArgs()); err != nil {
		return nil, err
	}
	timeout, err := CommandTimeout(in.GetTimeout())
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := p.s.commandLocal(ctx, in, req.GetLeaseId(), timeout)
	p.s.metrics.Command("forwarded_"+status.Code(err).String(), time.Since(start))
	if err != nil {
		return nil, err
	}
	return &tetherv1.ForwardCommandResponse{Response: resp}, nil
}

// ForwardDisconnect implements PeerService.
func (p *PeerServer) ForwardDisconnect(ctx context.Context, req *tetherv1.ForwardDisconnectRequest) (*tetherv1.ForwardDisconnectResponse, error) {
	in := req.GetRequest()
	if in == nil || req.GetLeaseId() == 0 {
		return nil, status.Error(codes.InvalidArgument, "request and lease_id are required")
	}
	if err := validID(in.GetDeviceId()); err != nil {
		return nil, err
	}
	resp, err := p.s.disconnectLocal(ctx, in, req.GetLeaseId())
	if err != nil {
		return nil, err
	}
	return &tetherv1.ForwardDisconnectResponse{Response: resp}, nil
}
