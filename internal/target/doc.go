// Package target owns the check of gRPC server addresses given by
// operators (tether-agent --server, tether-gateway --server): host:port,
// several comma-separated, or a grpc-go target such as dns:///name:port.
// It turns the mistakes grpc-go would only report at every reconnect (a URL
// scheme, a missing port) into one error at start. It does not dial.
package target
