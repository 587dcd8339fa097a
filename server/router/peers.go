package router

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

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

// PeerServer implements tetherv1.PeerServiceServer on top of the router's
// local path.
type PeerServer struct {
	tetherv1.UnimplementedPeerServiceServer
	r *Router
}

// PeerServer returns the PeerService implementation for this replica.
func (r *Router) PeerServer() *PeerServer { return &PeerServer{r: r} }

func (p *PeerServer) run(ctx context.Context, lease uint64, op Op) (Result, error) {
	if lease == 0 {
		return Result{}, status.Error(codes.InvalidArgument, "request and lease_id are required")
	}
	if _, err := op.Validate(); err != nil {
		return Result{}, err
	}
	start := time.Now()
	res, err := p.r.Local(ctx, lease, op)
	if op.Command != nil {
		p.r.cfg.Metrics.Command("forwarded_"+status.Code(err).String(), time.Since(start))
	}
	return res, err
}

// Invoke implements PeerService.
func (p *PeerServer) Invoke(ctx context.Context, req *tetherv1.InvokeRequest) (*tetherv1.InvokeResponse, error) {
	var op Op
	switch o := req.GetOp().(type) {
	case *tetherv1.InvokeRequest_Command:
		op.Command = o.Command
	case *tetherv1.InvokeRequest_Disconnect:
		op.Disconnect = o.Disconnect
	}
	if op.Command == nil && op.Disconnect == nil {
		return nil, status.Error(codes.InvalidArgument, "op: exactly one operation is required")
	}
	res, err := p.run(ctx, req.GetLeaseId(), op)
	if err != nil {
		return nil, err
	}
	if res.Command != nil {
		return &tetherv1.InvokeResponse{Result: &tetherv1.InvokeResponse_Command{Command: res.Command}}, nil
	}
	return &tetherv1.InvokeResponse{Result: &tetherv1.InvokeResponse_Disconnect{Disconnect: res.Disconnect}}, nil
}

// ForwardCommand implements the legacy PeerService call (replicas of older
// versions during a rolling upgrade).
func (p *PeerServer) ForwardCommand(ctx context.Context, req *tetherv1.ForwardCommandRequest) (*tetherv1.ForwardCommandResponse, error) {
	if req.GetRequest() == nil {
		return nil, status.Error(codes.InvalidArgument, "request and lease_id are required")
	}
	res, err := p.run(ctx, req.GetLeaseId(), Op{Command: req.GetRequest()})
	if err != nil {
		return nil, err
	}
	return &tetherv1.ForwardCommandResponse{Response: res.Command}, nil
}

// ForwardDisconnect implements the legacy PeerService call.
func (p *PeerServer) ForwardDisconnect(ctx context.Context, req *tetherv1.ForwardDisconnectRequest) (*tetherv1.ForwardDisconnectResponse, error) {
	if req.GetRequest() == nil {
		return nil, status.Error(codes.InvalidArgument, "request and lease_id are required")
	}
	res, err := p.run(ctx, req.GetLeaseId(), Op{Disconnect: req.GetRequest()})
	if err != nil {
		return nil, err
	}
	return &tetherv1.ForwardDisconnectResponse{Response: res.Disconnect}, nil
}
