// Package adminapi implements tether.v1.AdminService: administrative
// operations on the registry, such as revoking a device token. It owns the
// validation of admin requests; who may call it (admin API keys only) is
// decided by the server's interceptors, not here.
package adminapi
