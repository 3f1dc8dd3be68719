package config

import (
	"net"
	"reflect"
	"strings"
	"testing"
)

func TestParseRedisURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want RedisTarget
	}{
		{"plain host default port", "redis://localhost", RedisTarget{Addrs: []string{"localhost:6379"}}},
		{"trailing slash is db 0", "redis://localhost/", RedisTarget{Addrs: []string{"localhost:6379"}}},
		{"port and db", "redis://cache:6380/15", RedisTarget{Addrs: []string{"cache:6380"}, DB: 15}},
		{"db beyond 15", "redis://cache/42", RedisTarget{Addrs: []string{"cache:6379"}, DB: 42}},
		{"password only", "redis://:hunter2@cache:6379/1", RedisTarget{Addrs: []string{"cache:6379"}, DB: 1, Password: "hunter2"}},
		{"user and password", "redis://app:pw@cache", RedisTarget{Addrs: []string{"cache:6379"}, Username: "app", Password: "pw"}},
		{"user only", "redis://app@cache", RedisTarget{Addrs: []string{"cache:6379"}, Username: "app"}},
		{"percent-encoded password", "redis://:p%40ss%2Fw%3Ard@cache", RedisTarget{Addrs: []string{"cache:6379"}, Password: "p@ss/w:rd"}},
		{"unescaped @ in password", "redis://:p@ss@cache", RedisTarget{Addrs: []string{"cache:6379"}, Password: "p@ss"}},
		{"tls", "rediss://:pw@cache.example.com:6380/0", RedisTarget{Addrs: []string{"cache.example.com:6380"}, Password: "pw", TLS: true}},
		{"scheme case", "REDIS://cache", RedisTarget{Addrs: []string{"cache:6379"}}},
		{"ipv4", "redis://10.0.0.7:7000", RedisTarget{Addrs: []string{"10.0.0.7:7000"}}},
		{"ipv6", "redis://[::1]:6380", RedisTarget{Addrs: []string{"[::1]:6380"}}},
		{"ipv6 default port", "redis://[fd00::7]", RedisTarget{Addrs: []string{"[fd00::7]:6379"}}},
		{"underscore host", "redis://redis_primary:6379", RedisTarget{Addrs: []string{"redis_primary:6379"}}},
		{"sentinel", "redis-sentinel://:pw@s1:26379,s2:26380,s3/2?master=mymaster", RedisTarget{
			Addrs: []string{"s1:26379", "s2:26380", "s3:26379"}, DB: 2, Password: "pw", MasterName: "mymaster",
		}},
		{"sentinel single host no db", "redis-sentinel://s1?master=m", RedisTarget{Addrs: []string{"s1:26379"}, MasterName: "m"}},
		{"sentinel encoded master", "redis-sentinel://s1/0?master=my%20master", RedisTarget{Addrs: []string{"s1:26379"}, MasterName: "my master"}},
		{"cluster", "redis-cluster://n1:7000,n2:7001,n3", RedisTarget{Addrs: []string{"n1:7000", "n2:7001", "n3:6379"}, Cluster: true}},
		{"cluster with credentials and db 0", "redis-cluster://u:p@n1:7000/0", RedisTarget{Addrs: []string{"n1:7000"}, Username: "u", Password: "p", Cluster: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRedisURL(tc.in)
			if err != nil {
				t.Fatalf("ParseRedisURL(%q): %v", tc.in, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseRedisURL(%q) =\n%+v\nwant\n%+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseRedisURLErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", "missing scheme (want redis://host:port, rediss://, redis-sentinel:// or redis-cluster://)"},
		{"no scheme", "cache:6379", "missing scheme (want redis://host:port, rediss://, redis-sentinel:// or redis-cluster://)"},
		{"http", "http://cache", `unsupported scheme "http" (want redis:// or rediss://, or redis-sentinel:// / redis-cluster://)`},
		{"unix socket", "unix:///tmp/redis.sock", `unsupported scheme "unix" (want redis:// or rediss://, or redis-sentinel:// / redis-cluster://)`},
		{"no host", "redis://", "missing host"},
		{"only credentials", "redis://:pw@", "missing host"},
		{"only db", "redis:///0", "missing host"},
		{"empty host with port", "redis://:6379", `host ":6379": not a valid host name`},
		{"bad port", "redis://cache:abc", `host "cache:abc": port "abc" is not a number from 1 to 65535`},
		{"port zero", "redis://cache:0", `host "cache:0": port "0" is not a number from 1 to 65535`},
		{"port too big", "redis://cache:65536", `host "cache:65536": port "65536" is not a number from 1 to 65535`},
		{"empty port", "redis://cache:", `host "cache:": port "" is not a number from 1 to 65535`},
		{"ipv6 without brackets", "redis://::1:6379", `host "::1:6379": IPv6 addresses need brackets`},
		{"ipv6 unclosed", "redis://[::1:6379", `host "[::1:6379": missing ']'`},
		{"ipv6 junk after bracket", "redis://[::1]x", `host "[::1]x": unexpected "x" after ']'`},
		{"bracketed ipv4", "redis://[10.0.0.1]:6379", `host "[10.0.0.1]:6379": not an IPv6 address`},
		{"space in host", "redis://ca che", `host "ca che": not a valid host name`},
		{"several hosts plain", "redis://a:1,b:2", "2 hosts given; several hosts need redis-sentinel:// or redis-cluster://"},
		{"several hosts tls", "rediss://a,b,c", "3 hosts given; several hosts need redis-sentinel:// or redis-cluster://"},
		{"negative db", "redis://cache/-1", `database "-1" is not a non-negative integer`},
		{"plus db", "redis://cache/+1", `database "+1" is not a non-negative integer`},
		{"word db", "redis://cache/zero", `database "zero" is not a non-negative integer`},
		{"nested path", "redis://cache/0/1", `database "0/1" is not a non-negative integer`},
		{"query on plain", "redis://cache?dial_timeout=3s", `query parameter "dial_timeout" is not supported`},
		{"fragment", "redis://cache#x", "'#' is not allowed (percent-encode it as %23 in a password)"},
		{"unescaped slash in password", "redis://:a/b@cache", "'@' after the host (percent-encode '/' and '?' in a password as %2F and %3F)"},
		{"bad percent in password", "redis://:%zz@cache", "malformed percent-encoding in password"},
		{"bad percent in user", "redis://%zz:pw@cache", "malformed percent-encoding in user name"},
		{"sentinel no master", "redis-sentinel://s1:26379,s2:26379/0", "sentinel URL needs exactly one ?master=<name>"},
		{"sentinel empty master", "redis-sentinel://s1?master=", "sentinel URL needs exactly one ?master=<name>"},
		{"sentinel two masters", "redis-sentinel://s1?master=a&master=b", "sentinel URL needs exactly one ?master=<name>"},
		{"sentinel other param", "redis-sentinel://s1?master=m&x=1", `query parameter "x" is not supported`},
		{"sentinel bad query", "redis-sentinel://s1?master=%zz", "malformed query string"},
		{"sentinel empty host in list", "redis-sentinel://s1,,s3?master=m", "host 2: empty host"},
		{"sentinel bad port in list", "redis-sentinel://s1,s2:x?master=m", `host 2: host "s2:x": port "x" is not a number from 1 to 65535`},
		{"cluster nonzero db", "redis-cluster://n1,n2/1", "database 1: a cluster has only database 0"},
		{"cluster master param", "redis-cluster://n1?master=m", `query parameter "master" is not supported`},
		{"cluster trailing comma", "redis-cluster://n1:7000,", "host 2: empty host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRedisURL(tc.in)
			if err == nil {
				t.Fatalf("ParseRedisURL(%q) = %+v, want error %q", tc.in, got, tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("ParseRedisURL(%q) error\n got %q\nwant %q", tc.in, err.Error(), tc.want)
			}
			if !reflect.DeepEqual(got, RedisTarget{}) {
				t.Errorf("ParseRedisURL(%q) returned %+v with its error, want zero value", tc.in, got)
			}
		})
	}
}

// checkTarget states what every successful parse guarantees; the fuzz
// target relies on it.
func checkTarget(t *testing.T, in string, got RedisTarget) {
	t.Helper()
	if len(got.Addrs) == 0 {
		t.Fatalf("ParseRedisURL(%q): no addresses", in)
	}
	for _, a := range got.Addrs {
		h, p, err := net.SplitHostPort(a)
		if err != nil || h == "" || p == "" {
			t.Fatalf("ParseRedisURL(%q): address %q is not host:port", in, a)
		}
	}
	if got.DB < 0 {
		t.Fatalf("ParseRedisURL(%q): negative DB %d", in, got.DB)
	}
	sentinel := strings.HasPrefix(strings.ToLower(in), "redis-sentinel://")
	if sentinel != (got.MasterName != "") {
		t.Fatalf("ParseRedisURL(%q): MasterName %q for sentinel=%v", in, got.MasterName, sentinel)
	}
	if got.Cluster && (got.DB != 0 || got.TLS || sentinel) {
		t.Fatalf("ParseRedisURL(%q): inconsistent cluster target %+v", in, got)
	}
	if len(got.Addrs) > 1 && !got.Cluster && !sentinel {
		t.Fatalf("ParseRedisURL(%q): %d addresses without cluster or sentinel", in, len(got.Addrs))
	}
}

func FuzzParseRedisURL(f *testing.F) {
	for _, s := range []string{
		"redis://localhost:6379/0",
		"rediss://user:pass@host:6380/3",
		"redis://:p%40ss@[::1]:6379",
		"redis-sentinel://:pw@s1:26379,s2/1?master=mymaster",
		"redis-cluster://n1:7000,n2:7001",
		"redis://a,b",
		"redis://[::1",
		"redis://:a/b@c?d#e",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseRedisURL(s)
		if err != nil {
			// Errors quote what they show, so even hostile input stays on one line.
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("multi-line error %q", err.Error())
			}
			return
		}
		checkTarget(t, s, got)
	})
}
