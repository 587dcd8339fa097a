package adminapi

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/access"
	"github.com/tetherhq/tether/server/registry/memstore"
)

func TestRevokeTokenPutsTheIdOnTheDenyList(t *testing.T) {
	ctx := context.Background()
	st := memstore.New(memstore.Options{})
	svc := New(st)
	signer, err := access.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	tok, claims, err := signer.Issue("dev-1", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := svc.RevokeToken(ctx, &tetherv1.RevokeTokenRequest{Token: tok})
	if err != nil || resp.GetTokenId() != claims.ID || !resp.GetUntil().AsTime().Equal(claims.Expiry) {
		t.Fatalf("RevokeToken = %v, %v", resp, err)
	}
	if denied, err := st.Revoked(ctx, claims.ID); err != nil || !denied {
		t.Fatalf("Revoked = %v, %v", denied, err)
	}
	if _, err := svc.RevokeToken(ctx, &tetherv1.RevokeTokenRequest{TokenId: "abc"}); err != nil {
		t.Fatal(err)
	}
	if denied, _ := st.Revoked(ctx, "abc"); !denied {
		t.Fatal("bare id not denied")
	}
}

func TestRevokeTokenRejectsBadRequests(t *testing.T) {
	svc := New(memstore.New(memstore.Options{}))
	for _, req := range []*tetherv1.RevokeTokenRequest{
		{},
		{Token: "garbage"},
		{Token: "a.b", TokenId: "x"},
		{TokenId: "x", Until: timestamppb.New(time.Now().Add(-time.Hour))},
	} {
		if _, err := svc.RevokeToken(context.Background(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v, want InvalidArgument", req, err)
		}
	}
}
