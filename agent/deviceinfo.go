package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// SystemInfo reads the device info from this machine: the primary MAC (see
// PrimaryMAC), the hostname, the addresses of up interfaces (loopback and
// link-local excluded, sorted), GOOS plus the os-release PRETTY_NAME,
// GOARCH, and the kernel boot id (empty where there is none). It returns
// what it could read together with an error for the parts it could not.
func SystemInfo() (*tetherv1.DeviceInfo, error) {
	var errs []error
	info := &tetherv1.DeviceInfo{Os: osName(), Arch: runtime.GOARCH, BootId: bootID()}
	host, err := os.Hostname()
	if err != nil {
		errs = append(errs, fmt.Errorf("hostname: %w", err))
	}
	info.Hostname = host
	ifaces, err := net.Interfaces()
	if err != nil {
		errs = append(errs, fmt.Errorf("network interfaces: %w", err))
	}
	if mac := PrimaryMAC(ifaces); mac != nil {
		info.Mac = strings.ToLower(mac.String())
	}
	info.IpAddresses = ipAddresses(ifaces)
	return info, errors.Join(errs...)
}

// PrimaryMAC returns the hardware address of the first interface, by name,
// that is up, not loopback, and has a non-zero hardware address; nil when
// there is none. Sorting by name makes the choice the same on every start.
func PrimaryMAC(ifaces []net.Interface) net.HardwareAddr {
	ifaces = slices.Clone(ifaces)
	slices.SortFunc(ifaces, func(a, b net.Interface) int { return strings.Compare(a.Name, b.Name) })
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || len(ifc.HardwareAddr) == 0 {
			continue
		}
		if bytes.Count(ifc.HardwareAddr, []byte{0}) == len(ifc.HardwareAddr) {
			continue
		}
		return ifc.HardwareAddr
	}
	return nil
}

func ipAddresses(ifaces []net.Interface) []string {
	var ips []string
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			var ip net.IP
			switch v := a.(type) {
			case *net.IPNet:
				ip = v.IP
			case *net.IPAddr:
				ip = v.IP
			}
			if ip == nil || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() {
				continue
			}
			ips = append(ips, ip.String())
		}
	}
	slices.Sort(ips)
	return slices.Compact(ips)
}

// osName is GOOS, plus the distribution's PRETTY_NAME when os-release(5)
// has one: "linux (Debian GNU/Linux 12 (bookworm))".
func osName() string {
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		if data, err := os.ReadFile(p); err == nil {
			if pretty := prettyName(data); pretty != "" {
				return runtime.GOOS + " (" + pretty + ")"
			}
			break
		}
	}
	return runtime.GOOS
}

// prettyName returns PRETTY_NAME from an os-release file, unquoted.
func prettyName(data []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || k != "PRETTY_NAME" {
			continue
		}
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		} else if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = v[1 : len(v)-1]
		}
		return strings.TrimSpace(v)
	}
	return ""
}

// bootID is the kernel's boot id, or "" where there is none.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
