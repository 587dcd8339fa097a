package adminapi

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/access"
	"github.com/tetherhq/tether/server/registry"
)

// bareIDRevocation is how long a bare token id (without its expiry) stays
// denied.
const bareIDRevocation = 10 * 365 * 24 * time.Hour

// Service implements tetherv1.AdminServiceServer.
type Service struct {
	tetherv1.UnimplementedAdminServiceServer
	rev registry.Revocations
	now func() time.Time
}

// New returns the admin service over the registry's deny list.
func New(rev registry.Revocations) *Service { return &Service{rev: rev, now: time.Now} }

// RevokeToken implements AdminService.
func (s *Service) RevokeToken(ctx context.Context, req *tetherv1.RevokeTokenRequest) (*tetherv1.RevokeTokenResponse, error) {
	id, until := req.GetTokenId(), s.now().Add(bareIDRevocation)
	switch {
	case req.GetToken() != "" && id != "":
		return nil, status.Error(codes.InvalidArgument, "give token or token_id, not both")
	case req.GetToken() != "":
		t, err := access.ParseToken(req.GetToken())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "token: %v", err)
		}
		id, until = t.ID, t.Expiry
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "token or token_id is required")
	case len(id) > 128:
		return nil, status.Error(codes.InvalidArgument, "token_id: longer than 128 characters")
	}
	if u := req.GetUntil(); u != nil {
		if err := u.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "until: %v", err)
		}
		until = u.AsTime()
	}
	if !until.After(s.now()) {
		return nil, status.Errorf(codes.InvalidArgument, "until: %s is not in the future (an expired token is refused anyway)", until.UTC().Format(time.RFC3339))
	}
	if err := s.rev.Revoke(ctx, id, until); err != nil {
		return nil, status.Errorf(codes.Unavailable, "revoke token %s: the registry is unreachable, retry: %v", id, err)
	}
	return &tetherv1.RevokeTokenResponse{TokenId: id, Until: timestamppb.New(until)}, nil
}
