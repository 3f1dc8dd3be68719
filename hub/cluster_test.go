package hub

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// needCluster skips a test unless REDIS_URL names a Redis Cluster (CI runs
// the hub's tests against one too) and returns the Cluster client.
func needCluster(tb testing.TB, e *env) *redis.ClusterClient {
	tb.Helper()
	cc, ok := e.rdb.(*redis.ClusterClient)
	if !ok || !rdbtest.IsCluster() {
		tb.Skip("needs a Redis Cluster (REDIS_URL=redis-cluster://…)")
	}
	return cc
}

// clusterRoom is a channel and the master that owns its slot.
type clusterRoom struct {
	pid, cid, topic, token string
	master                 *redis.Client
	addr                   string
}

// roomsOnEveryMaster returns n fresh channels per master of the Cluster.
func roomsOnEveryMaster(tb testing.TB, e *env, cc *redis.ClusterClient, h *Hub, n int) map[string][]clusterRoom {
	tb.Helper()
	ctx := context.Background()
	var count atomic.Int32 // ForEachMaster calls fn on each master at once
	if err := cc.ForEachMaster(ctx, func(context.Context, *redis.Client) error { count.Add(1); return nil }); err != nil {
		tb.Fatal(err)
	}
	masters := int(count.Load())
	out := map[string][]clusterRoom{}
	for tries := 0; ; tries++ {
		full := len(out) == masters
		for _, rs := range out {
			full = full && len(rs) >= n
		}
		if full {
			return out
		}
		if tries == 1000 {
			tb.Fatalf("no channels on every master after %d tries: %d masters, have %d", tries, masters, len(out))
		}
		pid, cid, topic, token := e.channel()
		m, err := cc.MasterForKey(ctx, h.roomChannel(cid))
		if err != nil {
			tb.Fatal(err)
		}
		addr := m.Options().Addr
		if len(out[addr]) < n {
			out[addr] = append(out[addr], clusterRoom{pid, cid, topic, token, m, addr})
		}
	}
}

// shardSubscribers is what the room's master says of its channel: shard
// subscribers (SSUBSCRIBE) and classic ones (SUBSCRIBE).
func shardSubscribers(tb testing.TB, h *Hub, r clusterRoom) (sharded, classic int64) {
	tb.Helper()
	ctx := context.Background()
	ch := h.roomChannel(r.cid)
	s, err := r.master.PubSubShardNumSub(ctx, ch).Result()
	if err != nil {
		tb.Fatal(err)
	}
	c, err := r.master.PubSubNumSub(ctx, ch).Result()
	if err != nil {
		tb.Fatal(err)
	}
	return s[ch], c[ch]
}

// On a Cluster, a node subscribes each room with SSUBSCRIBE on the master
// that owns the room's slot, one connection per master, and receives what
// another node publishes to rooms on every master.
func TestClusterRoomsOnEveryMaster(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cc := needCluster(t, e)
	pub, _ := e.node(Options{})
	sub, srv := e.node(Options{})
	byMaster := roomsOnEveryMaster(t, e, cc, sub, 2)

	type joined struct {
		clusterRoom
		c   *client
		ref string
	}
	var all []joined
	for _, rs := range byMaster {
		for _, r := range rs {
			c := dial(t, srv, r.token)
			all = append(all, joined{r, c, c.mustJoin(r.topic)})
		}
	}
	for _, j := range all {
		if s, c := shardSubscribers(t, sub, j.clusterRoom); s != 1 || c != 0 {
			t.Errorf("channel %s on %s: %d shard subscribers and %d classic ones, want 1 and 0", j.cid, j.addr, s, c)
		}
	}
	sub.mu.RLock()
	shards := len(sub.shards)
	sub.mu.RUnlock()
	if shards != len(byMaster) {
		t.Errorf("the node holds %d pub/sub connections, want %d (one per master)", shards, len(byMaster))
	}

	for i, j := range all {
		publish(t, pub, j.pid, j.cid, fmt.Sprintf(`{"n":%d}`, i))
	}
	for i, j := range all {
		j.c.response(j.topic, j.ref, fmt.Sprintf(`{"n":%d}`, i))
	}
}

// When Redis drops a node's connection to one master (as it does when the
// master restarts, or here by CLIENT KILL), the node subscribes that
// master's rooms again and delivers what they missed, and its rooms on the
// other masters carry on.
func TestClusterRoomKeepsReceivingAfterItsShardDrops(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cc := needCluster(t, e)
	name := "riverhub-test-" + strings.ReplaceAll(e.prefix, ":", "-")
	sub, srv := e.nodeOn(rdbtest.Named(t, name), Options{}, httptest.NewUnstartedServer(nil))
	pub, _ := e.node(Options{})
	byMaster := roomsOnEveryMaster(t, e, cc, sub, 1)

	type joined struct {
		clusterRoom
		c   *client
		ref string
	}
	var all []joined
	for _, rs := range byMaster {
		r := rs[0]
		c := dial(t, srv, r.token)
		j := joined{r, c, c.mustJoin(r.topic)}
		publish(t, pub, r.pid, r.cid, `{"n":1}`)
		c.response(r.topic, j.ref, `{"n":1}`)
		all = append(all, j)
	}

	victim := all[0]
	lost(t, e.rdb, sub, victim.cid, 2, `{"n":2}`)
	killed := 0
	ctx := context.Background()
	list, err := victim.master.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " name="+name+" ") && !strings.Contains(line, " ssub=0 ") {
			id := strings.TrimPrefix(strings.Fields(line)[0], "id=")
			if err := victim.master.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
				t.Fatal(err)
			}
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d shard pub/sub connections on %s, want 1", killed, victim.addr)
	}
	victim.c.response(victim.topic, victim.ref, `{"n":2}`) // re-read from history

	for _, j := range all {
		n := `{"n":2}`
		if j.cid == victim.cid {
			n = `{"n":3}`
		}
		publish(t, pub, j.pid, j.cid, n)
		j.c.response(j.topic, j.ref, n)
		if extra := j.c.heartbeat(); len(extra) > 0 {
			t.Fatalf("room on %s: unexpected frames %v", j.addr, extra)
		}
	}
	if s, _ := shardSubscribers(t, sub, victim.clusterRoom); s != 1 {
		t.Errorf("after the kill, %d shard subscribers on %s, want 1", s, victim.addr)
	}
}

// A slot migration: the old master ends the room's shard subscription
// (Redis sends sunsubscribe), the node subscribes it again on the new
// master, and messages published there reach the room. Not parallel: it
// moves a slot (and moves it back), one that held no key before the test,
// so that other tests' keys stay where they are.
func TestClusterRoomFollowsItsSlot(t *testing.T) {
	e := newEnv(t)
	cc := needCluster(t, e)
	pub, _ := e.node(Options{})
	sub, srv := e.node(Options{})
	ctx := context.Background()
	var r, other clusterRoom
	var slot int64
	for tries := 0; r.cid == "" || other.cid == ""; tries++ {
		if tries == 100 {
			t.Fatal("no channel on an empty slot after 100 tries")
		}
		byMaster := roomsOnEveryMaster(t, e, cc, sub, 1)
		r, other = clusterRoom{}, clusterRoom{}
		for _, rs := range byMaster {
			if r.cid == "" {
				r = rs[0]
			} else {
				other = rs[0]
			}
		}
		var err error
		if slot, err = r.master.ClusterKeySlot(ctx, sub.roomChannel(r.cid)).Result(); err != nil {
			t.Fatal(err)
		}
		if n, err := r.master.ClusterCountKeysInSlot(ctx, int(slot)).Result(); err != nil || n != 0 {
			r.cid = ""
		}
	}
	c := dial(t, srv, r.token)
	ref := c.mustJoin(r.topic)
	publish(t, pub, r.pid, r.cid, `{"n":1}`)
	c.response(r.topic, ref, `{"n":1}`)

	moveSlot(t, cc, int(slot), r.master, other.master)
	t.Cleanup(func() { moveSlot(t, cc, int(slot), other.master, r.master) })

	eventually(t, "the room subscribed on its slot's new master", func() bool {
		s, _ := shardSubscribers(t, sub, clusterRoom{cid: r.cid, master: other.master})
		return s == 1
	})
	publish(t, pub, r.pid, r.cid, `{"n":2}`)
	c.response(r.topic, ref, `{"n":2}`)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("unexpected frames: %v", extra)
	}
}

// moveSlot migrates a slot and its keys from one master to another, the
// way redis-cli --cluster reshard does, and waits until every master
// agrees.
func moveSlot(tb testing.TB, cc *redis.ClusterClient, slot int, from, to *redis.Client) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatalf("move slot %d: %v", slot, err)
		}
	}
	fromID, err := from.Do(ctx, "CLUSTER", "MYID").Text()
	must(err)
	toID, err := to.Do(ctx, "CLUSTER", "MYID").Text()
	must(err)
	must(to.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err())
	must(from.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err())
	host, port, _ := strings.Cut(to.Options().Addr, ":")
	for {
		keys, err := from.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		must(err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(from.Do(ctx, args...).Err())
	}
	must(to.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
	must(from.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
	must(cc.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
		for {
			slots, err := n.ClusterSlots(ctx).Result()
			if err != nil {
				return err
			}
			for _, s := range slots {
				if int(s.Start) <= slot && slot <= int(s.End) && len(s.Nodes) > 0 && s.Nodes[0].ID == toID {
					return nil
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s does not see the slot on its new master", n.Options().Addr)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}))
	cc.ReloadState(ctx)
}

// A failover: the room's master hands its slots to its replica (CLUSTER
// FAILOVER, as an operator or a Cluster upgrade does), the node subscribes
// the room again on the new master, and what is published there reaches
// the room. It changes the Cluster's masters under whatever else uses the
// Cluster (other packages' tests run at the same time), so it runs only
// when HUB_TEST_FAILOVER is set too.
func TestClusterRoomSurvivesFailover(t *testing.T) {
	e := newEnv(t)
	cc := needCluster(t, e)
	if os.Getenv("HUB_TEST_FAILOVER") == "" {
		t.Skip("fails a master over: set HUB_TEST_FAILOVER=1 (on a Cluster of your own)")
	}
	pub, _ := e.node(Options{})
	sub, srv := e.node(Options{})
	r := roomsOnEveryMaster(t, e, cc, sub, 1)
	var room clusterRoom
	for _, rs := range r {
		room = rs[0]
		break
	}
	c := dial(t, srv, room.token)
	ref := c.mustJoin(room.topic)
	publish(t, pub, room.pid, room.cid, `{"n":1}`)
	c.response(room.topic, ref, `{"n":1}`)

	replica := failover(t, cc, sub.roomChannel(room.cid))
	eventually(t, "the room subscribed on the new master", func() bool {
		s, _ := shardSubscribers(t, sub, clusterRoom{cid: room.cid, master: replica})
		return s == 1
	})
	publish(t, pub, room.pid, room.cid, `{"n":2}`)
	c.response(room.topic, ref, `{"n":2}`)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("unexpected frames: %v", extra)
	}
}

// failover has a replica of key's master take its place (CLUSTER
// FAILOVER) and returns it once every node, and cc, agree.
func failover(tb testing.TB, cc *redis.ClusterClient, key string) *redis.Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	master := masterOf(tb, cc, key, "")
	id, err := master.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		tb.Fatal(err)
	}
	// A replica whose link to the master is up (after an earlier failover
	// the old master syncs from its new one for a while first).
	var newID, addr string
	var rc *redis.Client
	eventually(tb, "a replica of "+master.Options().Addr+" in sync", func() bool {
		replicas, err := master.Do(ctx, "CLUSTER", "REPLICAS", id).StringSlice()
		if err != nil || len(replicas) == 0 {
			return false
		}
		f := strings.Fields(replicas[0]) // "<id> <ip:port@cport> …"
		newID, addr = f[0], f[1][:strings.IndexByte(f[1], '@')]
		if rc == nil || rc.Options().Addr != addr {
			rc = redis.NewClient(&redis.Options{Addr: addr})
			tb.Cleanup(func() { _ = rc.Close() })
		}
		info, err := rc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up") && strings.Contains(info, "master_sync_in_progress:0")
	})
	if err := rc.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		tb.Fatal(err)
	}
	err = cc.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
		for {
			nodes, err := n.ClusterNodes(ctx).Result()
			if err != nil {
				return err
			}
			for _, line := range strings.Split(nodes, "\n") {
				if strings.HasPrefix(line, newID+" ") && strings.Contains(line, "master") {
					return nil
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s does not see %s as a master", n.Options().Addr, addr)
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	return masterOf(tb, cc, key, addr)
}

// masterOf returns key's master as cc names it, once cc names a node that
// says it is a master (and, if addr is not empty, is addr): cc's view may
// be older than the last failover.
func masterOf(tb testing.TB, cc *redis.ClusterClient, key, addr string) *redis.Client {
	tb.Helper()
	ctx := context.Background()
	var m *redis.Client
	var seen string
	deadline := time.Now().Add(10 * time.Second)
	for {
		cc.ReloadState(ctx)
		var err error
		m, err = cc.MasterForKey(ctx, key)
		if err == nil {
			role, err := m.Do(ctx, "ROLE").Slice()
			if err == nil && len(role) > 0 && role[0] == "master" && (addr == "" || m.Options().Addr == addr) {
				return m
			}
			seen = fmt.Sprintf("%s, role %v (%v)", m.Options().Addr, role, err)
		} else {
			seen = err.Error()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the Cluster client does not name %s as %s's master: %s", addr, key, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The hub knows a Cluster client, bare or inside the server's connection,
// and nothing else: otherwise it would quietly fall back to classic
// pub/sub on a Cluster.
func TestClusterOf(t *testing.T) {
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	single := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = cluster.Close(); _ = single.Close() })
	for _, tt := range []struct {
		c    redis.UniversalClient
		want bool
	}{{cluster, true}, {&rdb.Conn{UniversalClient: cluster}, true}, {single, false}, {&rdb.Conn{UniversalClient: single}, false}} {
		if got := clusterOf(tt.c) != nil; got != tt.want {
			t.Errorf("clusterOf(%T) found a Cluster: %v, want %v", tt.c, got, tt.want)
		}
	}
}
