package dispatch

import (
	"strconv"
	"strings"
	"time"

	"github.com/riverhub/riverhub/internal/rdb"
)

// part is one partition of the delivery schedule: its keys, all under one
// hash tag (rdb.Partitions), so that each script runs on one Cluster slot.
// Partition 0's tag is {dq}, the one tag of earlier versions.
type part struct {
	k int
	// legacyDueKey is the single due set of earlier versions, drained
	// into the projects' due sets (migrate.lua); partition 0 only.
	legacyDueKey, leaseKey, dPrefix string
	duePrefix, projectsKey          string
	epPrefix, unhealthyKey          string
	wakeKey                         string
	claimPrefix                     string // + a claim's token: the ids it claimed
	dlqPrefix, statsPrefix          string
}

func newPart(prefix string, ps rdb.Partitions, k int) *part {
	tag := prefix + ":" + ps.Tag(k) + ":"
	return &part{k: k,
		legacyDueKey: tag + "due", leaseKey: tag + "lease", dPrefix: tag + "d:",
		duePrefix: tag + "due:", projectsKey: tag + "projects",
		epPrefix: tag + "ep:", unhealthyKey: tag + "unhealthy", wakeKey: tag + "epwake", claimPrefix: tag + "claim:",
		dlqPrefix: tag + "dlq:", statsPrefix: tag + "stats:",
	}
}

func (p *part) dKey(id string) string              { return p.dPrefix + id }
func (p *part) attKey(id string) string            { return p.dPrefix + id + ":att" }
func (p *part) dueOf(pid string) string            { return p.duePrefix + pid }
func (p *part) epKey(whid string) string           { return p.epPrefix + whid }
func (p *part) waitKey(whid string) string         { return p.epPrefix + whid + ":wait" }
func (p *part) dlqKey(pid string) string           { return p.dlqPrefix + pid }
func (p *part) dlqHookKey(pid, whid string) string { return p.dlqPrefix + pid + ":" + whid }

// staleKey marks a stale claim's record as made (record.lua).
func (p *part) staleKey(id, token string) string { return p.dPrefix + id + ":stale:" + token }
func (p *part) statsKey(pid string, min int64) string {
	return p.statsPrefix + pid + ":" + strconv.FormatInt(min, 10)
}

// partOf is the partition of an endpoint's deliveries: the one every new
// delivery to it is written to. (A delivery written by an earlier version
// is in partition 0 whatever its endpoint, and stays there: the engine
// carries each delivery's partition from its claim to its record.)
func (e *Engine) partOf(whid string) *part { return e.parts[e.ps.Of(whid)] }

// hookParts are the partitions that may hold deliveries to an endpoint:
// its own, and partition 0 (those an earlier version wrote) when that is
// another.
func (e *Engine) hookParts(whid string) []*part {
	p := e.partOf(whid)
	if p.k == 0 {
		return []*part{p}
	}
	return []*part{p, e.parts[0]}
}

// partSet is a set of partitions, as a bit per partition.
type partSet []bool

func (s partSet) add(k int) { s[k] = true }

// only is the set of partition k alone.
func (e *Engine) only(k int) partSet {
	s := make(partSet, len(e.parts))
	s.add(k)
	return s
}

// nudgePayload is what a nudge carries: the due time (unix ms) and, with
// more than one partition, the partitions scheduled, "<ms>:<k>,<k>…". A
// payload without partitions (one partition, or an earlier version's)
// stands for every partition.
func nudgePayload(due time.Time, s partSet) string {
	ms := strconv.FormatInt(due.UnixMilli(), 10)
	if len(s) <= 1 {
		return ms
	}
	var b strings.Builder
	b.WriteString(ms)
	sep := byte(':')
	for k, in := range s {
		if in {
			b.WriteByte(sep)
			b.WriteString(strconv.Itoa(k))
			sep = ','
		}
	}
	return b.String()
}

// parseNudge reads a nudge's payload; ks nil means every partition.
func parseNudge(payload string, n int) (due time.Time, ks []int, ok bool) {
	msPart, list, hasList := strings.Cut(payload, ":")
	ms, err := strconv.ParseInt(msPart, 10, 64)
	if err != nil {
		return time.Time{}, nil, false
	}
	if !hasList {
		return time.UnixMilli(ms), nil, true
	}
	for f := range strings.SplitSeq(list, ",") {
		if k, err := strconv.Atoi(f); err == nil && k >= 0 && k < n {
			ks = append(ks, k)
		}
	}
	if ks == nil {
		return time.Time{}, nil, false
	}
	return time.UnixMilli(ms), ks, true
}
