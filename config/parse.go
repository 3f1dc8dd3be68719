package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// maxScheduleEntries caps the retry schedule: beyond it a dead receiver
// keeps deliveries alive for longer than anyone waits for them.
const maxScheduleEntries = 50

// parseSchedule parses a comma-separated list of Go durations. Entries are
// numbered from 1 in errors, since that is how people count attempts.
func parseSchedule(s string) ([]time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("at least one entry required")
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxScheduleEntries {
		return nil, fmt.Errorf("%d entries, at most %d allowed", len(parts), maxScheduleEntries)
	}
	out := make([]time.Duration, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("entry %d is empty", i+1)
		}
		d, err := time.ParseDuration(p)
		if err != nil {
			return nil, fmt.Errorf("entry %d %q: %w", i+1, p, err)
		}
		if d < 0 {
			return nil, fmt.Errorf("entry %d %q: negative", i+1, p)
		}
		out = append(out, d)
	}
	return out, nil
}

// parseCIDRs parses a comma-separated list of prefixes. A bare address is
// taken as the single host, and host bits are masked off, because operators
// often write the address of their receiver rather than its network.
func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("entry %d is empty", i+1)
		}
		if !strings.Contains(p, "/") {
			a, err := netip.ParseAddr(p)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("entry %d %q: not a CIDR or IP address", i+1, p)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("entry %d %q: not a CIDR", i+1, p)
		}
		out = append(out, pfx.Masked())
	}
	return out, nil
}

// ProviderLimit is one provider credential's limits; 0 means no limit of
// that kind.
type ProviderLimit struct {
	Concurrency int // requests in flight at once
	RPM         int // requests started per minute
	TPM         int // tokens (as answers report them) per minute
}

// parseProviderLimits reads "openai:concurrency=20,rpm=300;anthropic:rpm=50".
func parseProviderLimits(s string) (map[string]ProviderLimit, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	out := map[string]ProviderLimit{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, spec, ok := strings.Cut(part, ":")
		name = strings.TrimSpace(name)
		switch name {
		case "openai", "anthropic", "mock":
		default:
			return nil, fmt.Errorf("%q: unknown provider %q (want openai, anthropic or mock)", part, name)
		}
		if !ok || strings.TrimSpace(spec) == "" {
			return nil, fmt.Errorf("%q: want %s:concurrency=N,rpm=N,tpm=N", part, name)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s: given twice", name)
		}
		var l ProviderLimit
		for _, kv := range strings.Split(spec, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if !ok || err != nil || n < 0 {
				return nil, fmt.Errorf("%s: %q: want a limit=non-negative integer", name, strings.TrimSpace(kv))
			}
			switch strings.TrimSpace(k) {
			case "concurrency":
				l.Concurrency = n
			case "rpm":
				l.RPM = n
			case "tpm":
				l.TPM = n
			default:
				return nil, fmt.Errorf("%s: unknown limit %q (want concurrency, rpm or tpm)", name, k)
			}
		}
		out[name] = l
	}
	return out, nil
}
