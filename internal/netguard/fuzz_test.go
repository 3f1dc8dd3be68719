package netguard

import (
	"context"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// fixedResolver answers every name with one address.
type fixedResolver struct{ addr netip.Addr }

func (r fixedResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{r.addr}, nil
}

// FuzzCheckURL: never panics; whatever production accepts is an absolute
// https URL whose host is, or resolves to, an allowed address.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"https://example.com/hook", "http://127.0.0.1:8080/x", "https://[::1]/",
		"https://[fe80::1%25eth0]/", "https://10.0.0.1", "https://0x7f.1/", "https://user:pw@example.com/",
		"ftp://example.com", "//example.com", "https://example.com:99999/", "https://[::ffff:10.0.0.1]/"} {
		f.Add(s, []byte{93, 184, 216, 34})
		f.Add(s, []byte{10, 0, 0, 1})
	}
	f.Fuzz(func(t *testing.T, raw string, ip []byte) {
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			addr = netip.MustParseAddr("93.184.216.34")
		}
		g := &Guard{Resolver: fixedResolver{addr}}
		if err := g.CheckURL(context.Background(), raw, true); err != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil || !strings.EqualFold(u.Scheme, "https") || u.Hostname() == "" {
			t.Fatalf("production accepted %q", raw)
		}
		host := u.Hostname()
		if lit, err := netip.ParseAddr(host); err == nil {
			if g.Blocked(lit) {
				t.Fatalf("production accepted blocked literal %s in %q", lit, raw)
			}
		} else if g.Blocked(addr) {
			t.Fatalf("production accepted %q resolving to blocked %s", raw, addr)
		}
	})
}
