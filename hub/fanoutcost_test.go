package hub

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestFanoutCost is a measurement, not a check: it prints what the
// Cluster's nodes did while one hub node published HUB_FANOUT_COST_N
// messages (default 10,000) to rooms spread over the slots, each room
// joined by a socket on another hub node. It runs only when
// HUB_FANOUT_COST is set and REDIS_URL names a Cluster:
//
//	HUB_FANOUT_COST=1 REDIS_URL=redis-cluster://… go test -run TestFanoutCost -v ./hub/
//
// Per node: the cluster bus messages carrying publishes (classic PUBLISH
// goes to every node of the Cluster; SPUBLISH only to the slot's
// replicas), the channels subscribed while the rooms were joined
// (pubsub_channels, pubsubshard_channels: the latter's INFO name in Redis
// 7.0), and the CPU the node used. BENCHMARKS.md has the figures.
func TestFanoutCost(t *testing.T) {
	if os.Getenv("HUB_FANOUT_COST") == "" {
		t.Skip("a measurement: set HUB_FANOUT_COST=1 (and REDIS_URL to a Cluster)")
	}
	e := newEnv(t)
	cc, ok := e.rdb.(*redis.ClusterClient)
	if !ok {
		t.Skip("needs a Redis Cluster (REDIS_URL=redis-cluster://…)")
	}
	n := 10000
	if s := os.Getenv("HUB_FANOUT_COST_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	const rooms = 300
	pub, _ := e.node(Options{})
	_, srv := e.node(Options{SendQueue: 1024})

	type joined struct {
		pid, cid, topic string
		c               *client
	}
	js := make([]joined, rooms)
	for i := range js {
		pid, cid, topic, token := e.channel()
		c := dial(t, srv, token)
		c.mustJoin(topic)
		js[i] = joined{pid, cid, topic, c}
	}
	want := make([]int, rooms)
	for i := range n {
		want[i%rooms]++
	}

	ctx := context.Background()
	before := clusterStats(t, cc)
	var got atomic.Int64
	var wg sync.WaitGroup
	for i, j := range js {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < want[i]; {
				m, err := j.c.readErr(30 * time.Second)
				if err != nil {
					return
				}
				if m.Event == "response" {
					k++
					got.Add(1)
				}
			}
		}()
	}
	start := time.Now()
	const publishers = 8
	var pw sync.WaitGroup
	for p := range publishers {
		pw.Add(1)
		go func() {
			defer pw.Done()
			for i := p; i < n; i += publishers {
				j := js[i%rooms]
				if err := pub.Publish(ctx, j.pid, j.cid, []byte(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	pw.Wait()
	published := time.Since(start)
	wg.Wait()
	received := time.Since(start)
	time.Sleep(time.Second)      // for the bus messages still on their way
	after := clusterStats(t, cc) // the rooms are still joined: their subscriptions count

	t.Logf("%d messages to %d rooms: published in %v (%.0f/s), all %d received in %v",
		n, rooms, published.Round(time.Millisecond), float64(n)/published.Seconds(), got.Load(), received.Round(time.Millisecond))
	addrs := make([]string, 0, len(after))
	for a := range after {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool {
		if after[addrs[i]].role != after[addrs[j]].role {
			return after[addrs[i]].role < after[addrs[j]].role
		}
		return addrs[i] < addrs[j]
	})
	var b strings.Builder
	b.WriteString("\n| node | role | bus publish recv | bus publish sent | bus publishshard recv | bus publishshard sent | pubsub_channels | pubsubshard_channels | CPU s |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, a := range addrs {
		x, y := before[a], after[a]
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d | %.2f |\n", a, y.role,
			y.pubRecv-x.pubRecv, y.pubSent-x.pubSent, y.shardRecv-x.shardRecv, y.shardSent-x.shardSent,
			y.channels, y.shardChannels, y.cpu-x.cpu)
	}
	t.Log(b.String())
	if got.Load() != int64(n) {
		t.Errorf("received %d messages, want %d", got.Load(), n)
	}
}

type nodeStats struct {
	role                                   string
	pubRecv, pubSent, shardRecv, shardSent int64
	channels, shardChannels                int64
	cpu                                    float64
}

// clusterStats reads every node's counters, by address.
func clusterStats(tb testing.TB, cc *redis.ClusterClient) map[string]nodeStats {
	tb.Helper()
	var mu sync.Mutex
	out := map[string]nodeStats{}
	err := cc.ForEachShard(context.Background(), func(ctx context.Context, c *redis.Client) error {
		ci, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		info, err := c.Info(ctx, "stats", "cpu", "replication").Result()
		if err != nil {
			return err
		}
		f := fields(ci + "\n" + info)
		num := func(k string) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
		sys, _ := strconv.ParseFloat(f["used_cpu_sys"], 64)
		user, _ := strconv.ParseFloat(f["used_cpu_user"], 64)
		s := nodeStats{role: f["role"],
			pubRecv: num("cluster_stats_messages_publish_received"), pubSent: num("cluster_stats_messages_publish_sent"),
			shardRecv: num("cluster_stats_messages_publishshard_received"), shardSent: num("cluster_stats_messages_publishshard_sent"),
			channels: num("pubsub_channels"), shardChannels: num("pubsubshard_channels"), cpu: sys + user}
		mu.Lock()
		out[c.Options().Addr] = s
		mu.Unlock()
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func fields(s string) map[string]string {
	f := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			f[k] = v
		}
	}
	return f
}
