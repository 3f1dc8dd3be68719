package rdb

import (
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// DefaultClusterPartitions is the number of partitions used on a Redis
// Cluster when the setting is left at 0 (auto).
const DefaultClusterPartitions = 16

// Partitions is how a key family (the task queue, the delivery schedule,
// the callback deadlines) is split: n hash tags, each on its own part of a
// Cluster's 16384 slots, so that a cluster's masters share the family's
// load. Tag 0 is the family's name itself ("tasks" → keys P:{tasks}:…), the
// one tag of a single-partition deployment and of earlier versions, so
// their keys are partition 0's and nothing moves on an upgrade.
type Partitions struct {
	tags []string
}

// PartitionCount resolves the setting: n when it is set, else 16 on a
// Cluster and 1 otherwise.
func PartitionCount(setting int, c redis.UniversalClient) int {
	if setting > 0 {
		return setting
	}
	if IsCluster(c) {
		return DefaultClusterPartitions
	}
	return 1
}

// NewPartitions returns n partitions of the family named base. Split the
// 16384 slots into n equal ranges: tag 0 (base) lies in one of them, and
// each other range gets one tag, base + "." + s, of the first 32 suffixes
// whose slot lies in it the one nearest the range's middle (a range that
// straddles two masters' slots then goes to the one holding most of it). One tag per range: the tags spread evenly over a
// cluster's masters whatever their number, as long as each master holds a
// contiguous range (what redis-cli --cluster create makes).
func NewPartitions(base string, n int) Partitions {
	n = max(n, 1)
	tags := make([]string, 1, n)
	tags[0] = base
	taken, sb := 0, Slot(base)
	for r := range n { // the range holding base's slot, bounds as below
		if sb >= r*slots/n && sb < (r+1)*slots/n {
			taken = r
		}
	}
	for r := 0; r < n; r++ {
		if r == taken {
			continue
		}
		lo, hi := r*slots/n, (r+1)*slots/n
		best, dist, found := "", slots, 0
		for s := 0; found < 32; s++ {
			t := base + "." + strconv.Itoa(s)
			if sl := Slot(t); sl >= lo && sl < hi {
				found++
				if d := abs(2*sl - (lo + hi)); d < dist {
					best, dist = t, d
				}
			}
		}
		tags = append(tags, best)
	}
	return Partitions{tags: tags}
}

// N is the number of partitions.
func (p Partitions) N() int { return len(p.tags) }

// Tag is partition k's hash tag, braces included: "{tasks.17}".
func (p Partitions) Tag(k int) string { return "{" + p.tags[k] + "}" }

// Of is the partition of an id (a channel id, an endpoint id): always the
// same for the same id and n.
func (p Partitions) Of(id string) int {
	if len(p.tags) == 1 {
		return 0
	}
	return int(crc32.ChecksumIEEE([]byte(id)) % uint32(len(p.tags)))
}

const slots = 16384

// Slot is the Redis Cluster slot of a key (CRC16/XMODEM of its hash tag, or
// of the whole key without one, mod 16384).
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % slots
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
