package access

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// healthService is what reflection describes to callers without a key.
const (
	healthService = "grpc.health.v1.Health"
	healthFile    = "grpc/health/v1/health.proto"
)

// RegisterReflection registers gRPC server reflection (v1 and v1alpha) on
// s: the whole schema for any caller the policy let through with a key (or
// every caller when no keys are configured), the health service only for a
// caller without a key (ReflectionLimited), so that
// `grpcurl … grpc.health.v1.Health/Check` works without one.
func RegisterReflection(s *grpc.Server) {
	full := reflection.ServerOptions{Services: s}
	limited := reflection.ServerOptions{
		Services:           healthOnly{s},
		DescriptorResolver: healthResolver{},
		ExtensionResolver:  noExtensions{},
	}
	v1reflectiongrpc.RegisterServerReflectionServer(s, &splitReflection{
		full: reflection.NewServerV1(full), limited: reflection.NewServerV1(limited)})
	v1alphareflectiongrpc.RegisterServerReflectionServer(s, &splitReflectionV1Alpha{
		full: reflection.NewServer(full), limited: reflection.NewServer(limited)})
}

type splitReflectionV1Alpha struct {
	v1alphareflectiongrpc.UnimplementedServerReflectionServer
	full, limited v1alphareflectiongrpc.ServerReflectionServer
}

func (r *splitReflectionV1Alpha) ServerReflectionInfo(stream v1alphareflectiongrpc.ServerReflection_ServerReflectionInfoServer) error {
	if ReflectionLimited(stream.Context()) {
		return r.limited.ServerReflectionInfo(stream)
	}
	return r.full.ServerReflectionInfo(stream)
}

type splitReflection struct {
	v1reflectiongrpc.UnimplementedServerReflectionServer
	full, limited v1reflectiongrpc.ServerReflectionServer
}

func (r *splitReflection) ServerReflectionInfo(stream v1reflectiongrpc.ServerReflection_ServerReflectionInfoServer) error {
	if ReflectionLimited(stream.Context()) {
		return r.limited.ServerReflectionInfo(stream)
	}
	return r.full.ServerReflectionInfo(stream)
}

type healthOnly struct{ s *grpc.Server }

func (h healthOnly) GetServiceInfo() map[string]grpc.ServiceInfo {
	out := map[string]grpc.ServiceInfo{}
	if info, ok := h.s.GetServiceInfo()[healthService]; ok {
		out[healthService] = info
	}
	return out
}

type healthResolver struct{}

func (healthResolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if path != healthFile {
		return nil, fmt.Errorf("%s: %w (without an API key reflection describes %s only)", path, protoregistry.NotFound, healthService)
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (healthResolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		return nil, err
	}
	if d.ParentFile().Path() != healthFile {
		return nil, fmt.Errorf("%s: %w (without an API key reflection describes %s only)", name, protoregistry.NotFound, healthService)
	}
	return d, nil
}

type noExtensions struct{}

func (noExtensions) FindExtensionByName(field protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return nil, protoregistry.NotFound
}

func (noExtensions) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return nil, protoregistry.NotFound
}

func (noExtensions) RangeExtensionsByMessage(message protoreflect.FullName, f func(protoreflect.ExtensionType) bool) {
}

var _ protodesc.Resolver = healthResolver{}
