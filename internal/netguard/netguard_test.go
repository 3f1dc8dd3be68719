package netguard_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/riverhub/riverhub/internal/netguard"
)

func TestBlocked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ip   string
		want bool
	}{
		{"this network", "0.0.0.0", true},
		{"this network host", "0.1.2.3", true},
		{"private 10/8", "10.0.0.1", true},
		{"private 10/8 top", "10.255.255.255", true},
		{"cgnat", "100.64.0.1", true},
		{"cgnat top", "100.127.255.254", true},
		{"just below cgnat", "100.63.255.255", false},
		{"just above cgnat", "100.128.0.0", false},
		{"loopback", "127.0.0.1", true},
		{"loopback other", "127.5.6.7", true},
		{"link-local / cloud metadata", "169.254.169.254", true},
		{"private 172.16/12", "172.16.0.1", true},
		{"private 172.31", "172.31.255.255", true},
		{"just above 172.16/12", "172.32.0.1", false},
		{"ietf protocol assignments", "192.0.0.8", true},
		{"documentation 192.0.2", "192.0.2.1", true},
		{"private 192.168", "192.168.1.1", true},
		{"benchmarking", "198.18.0.1", true},
		{"benchmarking second /16", "198.19.255.1", true},
		{"documentation 198.51.100", "198.51.100.7", true},
		{"documentation 203.0.113", "203.0.113.9", true},
		{"multicast", "224.0.0.1", true},
		{"multicast top", "239.255.255.250", true},
		{"reserved", "240.0.0.1", true},
		{"broadcast", "255.255.255.255", true},
		{"ipv6 unspecified", "::", true},
		{"ipv6 loopback", "::1", true},
		{"ipv4-mapped private", "::ffff:10.0.0.1", true},
		{"ipv4-mapped loopback", "::ffff:127.0.0.1", true},
		{"ipv4-mapped metadata", "::ffff:169.254.169.254", true},
		{"ipv4-mapped public", "::ffff:8.8.8.8", false},
		{"nat64 of private", "64:ff9b::a00:1", true},
		{"discard", "100::1", true},
		{"ipv6 documentation", "2001:db8::1", true},
		{"unique local fc00", "fc00::1", true},
		{"unique local fd", "fd12:3456::1", true},
		{"link-local", "fe80::1", true},
		{"link-local with zone", "fe80::1%eth0", true},
		{"link-local top", "febf::1", true},
		{"multicast all nodes", "ff02::1", true},
		{"multicast global", "ff0e::1", true},
		{"public google dns", "8.8.8.8", false},
		{"public cloudflare", "1.1.1.1", false},
		{"public just below 10/8", "9.255.255.255", false},
		{"public just above 10/8", "11.0.0.0", false},
		{"public ipv6", "2606:4700::1111", false},
		{"public ipv6 google", "2001:4860:4860::8888", false},
	}
	g := &netguard.Guard{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.ip)
			if got := g.Blocked(ip); got != tt.want {
				t.Errorf("Blocked(%s) = %v, want %v", tt.ip, got, tt.want)
			}
		})
	}
}

func TestAllow(t *testing.T) {
	t.Parallel()
	g := &netguard.Guard{Allow: []netip.Prefix{
		netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("fd00:1::/32"),
		netip.MustParsePrefix("127.0.0.1/32"),
	}}
	tests := []struct {
		name string
		ip   string
		want bool
	}{
		{"allowed private", "10.1.2.3", false},
		{"allowed private, mapped", "::ffff:10.1.2.3", false},
		{"private outside the allowed prefix", "10.2.0.1", true},
		{"allowed ULA", "fd00:1::5", false},
		{"ULA outside the allowed prefix", "fd00:2::5", true},
		{"allowed single loopback", "127.0.0.1", false},
		{"other loopback", "127.0.0.2", true},
		{"ipv6 loopback is not ipv4 loopback", "::1", true},
		{"public stays allowed", "8.8.8.8", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := g.Blocked(netip.MustParseAddr(tt.ip)); got != tt.want {
				t.Errorf("Blocked(%s) = %v, want %v", tt.ip, got, tt.want)
			}
		})
	}
}

type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	ss, ok := f[host]
	if !ok {
		return nil, errors.New("lookup " + host + ": no such host")
	}
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out, nil
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	res := fakeResolver{
		"hooks.example.com":    {"93.184.215.14", "2606:2800:220:1::1"},
		"internal.example.com": {"10.0.0.7"},
		"mixed.example.com":    {"93.184.215.14", "::ffff:192.168.1.1"},
		"rebind.example.com":   {"169.254.169.254"},
		"empty.example.com":    {},
		"trusted.internal":     {"10.1.0.9"},
	}
	tests := []struct {
		name       string
		url        string
		production bool
		allow      string
		wantErr    string // "" = accepted; else a word the error must contain
	}{
		// Shape, any mode.
		{"https dev", "https://hooks.example.com/x", false, "", ""},
		{"http dev", "http://localhost:3000/x", false, "", ""},
		{"private literal dev", "http://10.0.0.1/x", false, "", ""},
		{"upper-case scheme", "HTTPS://hooks.example.com/x", true, "", ""},
		{"relative", "/webhook", false, "", "absolute"},
		{"no scheme", "hooks.example.com/x", false, "", "absolute"},
		{"empty", "", false, "", "absolute"},
		{"no host", "https:///x", false, "", "absolute"},
		{"port only", "https://:443/x", false, "", "absolute"},
		{"ftp", "ftp://hooks.example.com/x", false, "", "scheme"},
		{"opaque javascript", "javascript:alert(1)", false, "", "absolute"},
		{"file", "file:///etc/passwd", false, "", "absolute"},
		{"credentials", "https://u:p@hooks.example.com/x", false, "", "credentials"},
		{"unparseable", "https://hooks.example.com/%zz", false, "", "absolute"},
		// Production.
		{"http production", "http://hooks.example.com/x", true, "", "https"},
		{"public name", "https://hooks.example.com/x", true, "", ""},
		{"public literal", "https://8.8.8.8/x", true, "", ""},
		{"public ipv6 literal", "https://[2606:4700::1111]/x", true, "", ""},
		{"loopback literal", "https://127.0.0.1/x", true, "", "not allowed"},
		{"private literal", "https://10.1.2.3:8443/x", true, "", "not allowed"},
		{"ipv6 loopback literal", "https://[::1]/x", true, "", "not allowed"},
		{"ipv4-mapped literal", "https://[::ffff:10.0.0.1]/x", true, "", "not allowed"},
		{"link-local with zone literal", "https://[fe80::1%25eth0]/x", true, "", "not allowed"},
		{"metadata literal", "https://169.254.169.254/latest", true, "", "not allowed"},
		{"unspecified literal", "https://0.0.0.0/x", true, "", "not allowed"},
		{"name resolving to private", "https://internal.example.com/x", true, "", "10.0.0.7"},
		{"name resolving to metadata", "https://rebind.example.com/x", true, "", "169.254.169.254"},
		{"name with one private address", "https://mixed.example.com/x", true, "", "192.168.1.1"},
		{"unresolvable", "https://nxdomain.example.com/x", true, "", "resolve"},
		{"resolves to nothing", "https://empty.example.com/x", true, "", "resolve"},
		{"allowed literal", "https://10.1.2.3/x", true, "10.1.0.0/16", ""},
		{"allowed name", "https://trusted.internal/x", true, "10.1.0.0/16", ""},
		{"outside allow", "https://10.2.0.1/x", true, "10.1.0.0/16", "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &netguard.Guard{Resolver: res}
			if tt.allow != "" {
				g.Allow = []netip.Prefix{netip.MustParsePrefix(tt.allow)}
			}
			err := g.CheckURL(context.Background(), tt.url, tt.production)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("CheckURL(%q, production=%v) = %v, want accepted", tt.url, tt.production, err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("CheckURL(%q, production=%v) accepted, want an error about %q", tt.url, tt.production, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("CheckURL(%q) = %q, want it to mention %q", tt.url, err, tt.wantErr)
			}
		})
	}
}

// TestCheckURLDoesNotResolveInDevelopment: development accepts any host
// without a lookup, so an offline laptop can register receivers.
func TestCheckURLDoesNotResolveInDevelopment(t *testing.T) {
	t.Parallel()
	g := &netguard.Guard{Resolver: fakeResolver{}}
	if err := g.CheckURL(context.Background(), "https://not-resolvable.invalid/x", false); err != nil {
		t.Errorf("development CheckURL = %v, want accepted without a lookup", err)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	g := &netguard.Guard{Resolver: fakeResolver{"hooks.example.com": {"93.184.215.14", "2606:2800:220:1::1"}}}
	got, err := g.Resolve(context.Background(), "hooks.example.com")
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if len(got) != 2 || got[0].String() != "93.184.215.14" {
		t.Errorf("Resolve = %v, want both addresses", got)
	}
	got, err = g.Resolve(context.Background(), "[2606:4700::1111]")
	if err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("2606:4700::1111") {
		t.Errorf("Resolve of a bracketed literal = %v, %v", got, err)
	}
}
