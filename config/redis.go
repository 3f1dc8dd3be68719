package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// RedisTarget is a parsed REDIS_URL, neutral of any client library, so the
// code that connects does not parse the URL again.
type RedisTarget struct {
	Addrs      []string // host:port each; the port defaults to 6379, or 26379 for sentinels
	DB         int      // database number; always 0 for a cluster
	Username   string   // ACL user; "" for the default user
	Password   string   // password; for sentinel, the master's (and the sentinels', unless the client is told otherwise)
	TLS        bool     // rediss://
	MasterName string   // sentinel only: the monitored master's name
	Cluster    bool     // redis-cluster://: Addrs are seed nodes
}

// The accepted schemes.
const (
	schemeRedis    = "redis"
	schemeRedisTLS = "rediss"
	schemeSentinel = "redis-sentinel"
	schemeCluster  = "redis-cluster"
)

// ParseRedisURL parses the forms REDIS_URL accepts:
//
//	redis://[[user]:password@]host[:port][/db]
//	rediss://[[user]:password@]host[:port][/db]           (TLS)
//	redis-sentinel://[[user]:password@]host[:port],host[:port]/db?master=name
//	redis-cluster://[[user]:password@]host[:port],host[:port]
//
// The URL is split by hand rather than with net/url because a list of hosts
// is not a valid URL authority. Errors never quote the whole URL, since it
// may carry a password; the caller adds the variable name.
func ParseRedisURL(s string) (RedisTarget, error) {
	var t RedisTarget
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return t, errors.New("missing scheme (want redis://host:port, rediss://, redis-sentinel:// or redis-cluster://)")
	}
	defPort := "6379"
	switch strings.ToLower(scheme) {
	case schemeRedis:
	case schemeRedisTLS:
		t.TLS = true
	case schemeSentinel:
		defPort = "26379"
	case schemeCluster:
		t.Cluster = true
	default:
		return t, fmt.Errorf("unsupported scheme %q (want redis:// or rediss://, or redis-sentinel:// / redis-cluster://)", scheme)
	}
	sentinel := defPort == "26379"

	// A '#', or an '@' past the host, almost always means a password with
	// an unescaped '/', '?' or '#'; say so without quoting anything.
	if strings.Contains(rest, "#") {
		return t, errors.New("'#' is not allowed (percent-encode it as %23 in a password)")
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if strings.Contains(tail, "@") {
		return t, errors.New("'@' after the host (percent-encode '/' and '?' in a password as %2F and %3F)")
	}
	tail, rawQuery, _ := strings.Cut(tail, "?")
	path := strings.TrimPrefix(tail, "/")

	// The password may contain '@' when not escaped; the hosts never do.
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		var err error
		if t.Username, t.Password, err = parseUserinfo(authority[:i]); err != nil {
			return RedisTarget{}, err
		}
		authority = authority[i+1:]
	}

	if authority == "" {
		return RedisTarget{}, errors.New("missing host")
	}
	hosts := strings.Split(authority, ",")
	if len(hosts) > 1 && !sentinel && !t.Cluster {
		return RedisTarget{}, fmt.Errorf("%d hosts given; several hosts need redis-sentinel:// or redis-cluster://", len(hosts))
	}
	for i, h := range hosts {
		addr, err := parseHostPort(h, defPort)
		if err != nil {
			if len(hosts) > 1 {
				return RedisTarget{}, fmt.Errorf("host %d: %w", i+1, err)
			}
			return RedisTarget{}, err
		}
		t.Addrs = append(t.Addrs, addr)
	}

	if path != "" {
		db, err := strconv.Atoi(path)
		if err != nil || db < 0 || path[0] == '+' {
			return RedisTarget{}, fmt.Errorf("database %q is not a non-negative integer", path)
		}
		if t.Cluster && db != 0 {
			return RedisTarget{}, fmt.Errorf("database %d: a cluster has only database 0", db)
		}
		t.DB = db
	}

	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return RedisTarget{}, errors.New("malformed query string")
	}
	for k := range q {
		if !sentinel || k != "master" {
			// Ignoring client options silently would make people believe
			// they took effect.
			return RedisTarget{}, fmt.Errorf("query parameter %q is not supported", k)
		}
	}
	if sentinel {
		if m := q["master"]; len(m) != 1 || strings.TrimSpace(m[0]) == "" {
			return RedisTarget{}, errors.New("sentinel URL needs exactly one ?master=<name>")
		}
		t.MasterName = q.Get("master")
	}
	return t, nil
}

// parseUserinfo splits "user:password" and undoes percent-encoding. A lone
// word with no colon is a user name, as in the usual Redis clients.
func parseUserinfo(s string) (user, password string, err error) {
	u, p, hasPass := strings.Cut(s, ":")
	if user, err = url.PathUnescape(u); err != nil {
		return "", "", errors.New("malformed percent-encoding in user name")
	}
	if hasPass {
		if password, err = url.PathUnescape(p); err != nil {
			// Never echo the password, not even a piece of it.
			return "", "", errors.New("malformed percent-encoding in password")
		}
	}
	return user, password, nil
}

// parseHostPort checks one "host[:port]" and returns "host:port" with the
// default port filled in. IPv6 literals need brackets, as in any URL.
func parseHostPort(h, defPort string) (string, error) {
	var host, port string
	switch {
	case h == "":
		return "", errors.New("empty host")
	case h[0] == '[':
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", fmt.Errorf("host %q: missing ']'", h)
		}
		host, port = h[1:end], defPort
		switch tail := h[end+1:]; {
		case tail == "":
		case tail[0] == ':':
			port = tail[1:]
		default:
			return "", fmt.Errorf("host %q: unexpected %q after ']'", h, tail)
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return "", fmt.Errorf("host %q: not an IPv6 address", h)
		}
	default:
		host, port = h, defPort
		if i := strings.LastIndexByte(h, ':'); i >= 0 {
			if strings.Count(h, ":") > 1 {
				return "", fmt.Errorf("host %q: IPv6 addresses need brackets", h)
			}
			host, port = h[:i], h[i+1:]
		}
		if !validHostname(host) {
			return "", fmt.Errorf("host %q: not a valid host name", h)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '+' {
		return "", fmt.Errorf("host %q: port %q is not a number from 1 to 65535", h, port)
	}
	return net.JoinHostPort(host, port), nil
}

// validHostname accepts DNS names and IPv4 literals. Underscores are allowed
// because container platforms hand them out in service names.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		case r == '-', r == '.', r == '_':
		default:
			return false
		}
	}
	return true
}
