package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// parseSources reads -sources: "A-B" (an IPv4 range), "a,b,c", or "".
func parseSources(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		a, b := net.ParseIP(strings.TrimSpace(lo)).To4(), net.ParseIP(strings.TrimSpace(hi)).To4()
		if a == nil || b == nil {
			return nil, fmt.Errorf("%q: a range needs two IPv4 addresses", s)
		}
		from, to := binary.BigEndian.Uint32(a), binary.BigEndian.Uint32(b)
		if to < from || to-from >= 1<<16 {
			return nil, fmt.Errorf("%q: want a range of 1 to 65536 addresses, low to high", s)
		}
		var out []string
		for v := from; ; v++ {
			ip := make(net.IP, 4)
			binary.BigEndian.PutUint32(ip, v)
			out = append(out, ip.String())
			if v == to {
				return out, nil
			}
		}
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		ip := net.ParseIP(strings.TrimSpace(p))
		if ip == nil {
			return nil, fmt.Errorf("%q is not an IP address", p)
		}
		out = append(out, ip.String())
	}
	return out, nil
}

// vmRSS is a process's resident set size in bytes, from /proc/<pid>/status.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read the server's memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		num, unit, _ := strings.Cut(strings.TrimSpace(rest), " ")
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil || unit != "kB" {
			break
		}
		return v << 10, nil
	}
	return 0, errors.New("no VmRSS line in /proc/" + strconv.Itoa(pid) + "/status")
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
