// Package netguard decides which network addresses riverhub may send a
// webhook to. Production mode refuses loopback, private, link-local, CGNAT,
// multicast and unspecified addresses (IPv4 and IPv6, including IPv4-mapped
// IPv6), so a project cannot aim deliveries at the deployment's own network.
// The check applies to resolved addresses, not only to literals, because a
// public name can point at a private address.
package netguard

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

var blocked = mustPrefixes(
	"0.0.0.0/8",       // "this network"
	"10.0.0.0/8",      // private
	"100.64.0.0/10",   // CGNAT
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link-local (cloud metadata lives here)
	"172.16.0.0/12",   // private
	"192.0.0.0/24",    // IETF protocol assignments
	"192.0.2.0/24",    // documentation
	"192.168.0.0/16",  // private
	"198.18.0.0/15",   // benchmarking
	"198.51.100.0/24", // documentation
	"203.0.113.0/24",  // documentation
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, broadcast
	"::/128",          // unspecified
	"::/96",           // IPv4-compatible (deprecated): embeds an IPv4 address
	"::1/128",         // loopback
	"64:ff9b::/96",    // NAT64 can reach IPv4 private space
	"100::/64",        // discard
	"2001:db8::/32",   // documentation
	"2002::/16",       // 6to4: embeds an IPv4 address
	"fec0::/10",       // site-local (deprecated)
	"fc00::/7",        // unique local
	"fe80::/10",       // link-local
	"ff00::/8",        // multicast
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Guard holds the operator's allow-list.
type Guard struct {
	// Allow lists prefixes that are allowed although they are blocked by
	// default (internal receivers an operator trusts).
	Allow []netip.Prefix
	// Resolver looks names up; nil means net.DefaultResolver.
	Resolver interface {
		LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	}
}

// Blocked reports whether ip is in a blocked range and not allowed.
func (g *Guard) Blocked(ip netip.Addr) bool {
	// Prefix.Contains is false for any address with a zone, so without
	// dropping it "fe80::1%eth0" would pass as not blocked.
	ip = ip.Unmap().WithZone("")
	for _, p := range g.Allow {
		if p.Contains(ip) {
			return false
		}
	}
	for _, p := range blocked {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// CheckURL validates a webhook URL: absolute, http or https, with a host.
// In production it also requires https and refuses hosts that are, or
// resolve to, a blocked address.
func (g *Guard) CheckURL(ctx context.Context, raw string, production bool) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("url must be an absolute http(s) URL")
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if production {
			return fmt.Errorf("url must use https in production")
		}
	default:
		return fmt.Errorf("url scheme must be http or https")
	}
	if u.User != nil {
		return fmt.Errorf("url must not carry credentials")
	}
	if !production {
		return nil
	}
	_, err = g.Resolve(ctx, u.Hostname())
	return err
}

// Resolve returns host's addresses, failing if any of them is blocked: a
// name with one public and one private address is refused, since the
// dialer could pick either.
func (g *Guard) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if g.Blocked(ip) {
			return nil, fmt.Errorf("address %s is not allowed (private, loopback or reserved)", ip)
		}
		return []netip.Addr{ip}, nil
	}
	var r interface {
		LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	} = net.DefaultResolver
	if g.Resolver != nil {
		r = g.Resolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("cannot resolve %q", host)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("cannot resolve %q", host)
	}
	for _, a := range addrs {
		if g.Blocked(a) {
			return nil, fmt.Errorf("host %q resolves to %s, which is not allowed (private, loopback or reserved)", host, a.Unmap())
		}
	}
	return addrs, nil
}
