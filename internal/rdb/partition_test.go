package rdb_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

func TestSlotMatchesRedis(t *testing.T) {
	keys := []string{"foo", "{user1000}.following", "riverhub:{tasks}:rr", "a{}b", "{tasks.3}:q:x", "x{y"}
	want := map[string]int{"foo": 12182, "{user1000}.following": 3443}
	for k, w := range want {
		if got := rdb.Slot(k); got != w {
			t.Errorf("Slot(%q) = %d, want %d", k, got, w)
		}
	}
	if !strings.HasPrefix(os.Getenv("REDIS_URL"), "redis") {
		return
	}
	c, _ := rdbtest.New(t)
	for _, k := range keys {
		got, err := c.ClusterKeySlot(context.Background(), k).Result()
		if err != nil {
			t.Skipf("CLUSTER KEYSLOT: %v (not a cluster)", err)
		}
		if int(got) != rdb.Slot(k) {
			t.Errorf("Slot(%q) = %d, Redis says %d", k, rdb.Slot(k), got)
		}
	}
}

func TestPartitionsSpreadOverSlotRanges(t *testing.T) {
	for _, n := range []int{1, 3, 16, 113, 151, 226, 251, 256} {
		p := rdb.NewPartitions("tasks", n)
		if p.N() != n || p.Tag(0) != "{tasks}" {
			t.Fatalf("n=%d: N()=%d Tag(0)=%q", n, p.N(), p.Tag(0))
		}
		ranges := make([]int, n) // tags per range of 16384/n slots
		for k := range n {
			sl := rdb.Slot(p.Tag(k))
			for r := range n {
				if sl >= r*16384/n && sl < (r+1)*16384/n {
					ranges[r]++
				}
			}
		}
		for r, c := range ranges {
			if c != 1 {
				t.Errorf("n=%d: slot range %d holds %d tags, want 1", n, r, c)
			}
		}
		counts := make([]int, n)
		for i := 0; i < 1000*n; i++ {
			counts[p.Of("ch-"+strconv.Itoa(i))]++
		}
		for k, c := range counts {
			if c < 800 || c > 1200 {
				t.Errorf("n=%d: partition %d got %d of %d ids", n, k, c, 1000*n)
			}
		}
	}
}
