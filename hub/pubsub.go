package hub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// shard is one pub/sub connection and the rooms subscribed over it. On a
// single Redis there is one, for every room (SUBSCRIBE). On a Cluster
// there is one per master that owns the slot of a room this node holds
// (SSUBSCRIBE): a shard channel lives on its slot's master, a connection
// takes only the shard channels of its own server's slots, and one
// SSUBSCRIBE only those of one slot, so each room goes in a command of its
// own. (A go-redis PubSub sticks to one server and, when it reconnects,
// re-sends all its shard channels in one SSUBSCRIBE, which a Cluster
// refuses as CROSSSLOT as soon as they span two slots; so the hub never
// lets a PubSub reconnect: a shard that fails is dropped and its rooms are
// subscribed anew, each on its slot's current master.)
type shard struct {
	addr string // the master's address on a Cluster; "" on a single Redis
	ps   *redis.PubSub
	done chan struct{} // closed when the shard is dropped: its reader stops

	// Under Hub.mu; the counts let the loop tell its own commands'
	// confirmations from the server's.
	pending map[string]int // channel id → subscribes sent, not yet confirmed
	unsubs  map[string]int // channel id → unsubscribes sent, not yet confirmed
	dropped bool           // written by the loop only
}

// event is what a shard's reader hands the loop: a *redis.Subscription, a
// *redis.Message, or an error, after which the reader stops and the loop
// drops the shard.
type event struct {
	sh  *shard
	msg any
}

const (
	// pingInterval is how long a shard's connection may stay silent before
	// the reader PINGs it; a PING unanswered for as long again fails it.
	pingInterval = 3 * time.Second
	// minBackoff and maxBackoff bound the wait before the loop tries again
	// to subscribe rooms it could not: a failed connection, a Cluster slot
	// whose master is not known yet (a failover takes seconds).
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
	// staleFor is how long after a master ended a room's subscription the
	// loop waits for the Cluster client to name another master for the
	// room's slot; after that it believes the client (the slot may have
	// come back).
	staleFor = 5 * time.Second
)

// loop owns the pub/sub connections: it subscribes and unsubscribes rooms
// and fans messages out. Messages of one channel arrive on one connection
// at a time, in publish order, and are handed to the sockets in that order.
func (h *Hub) loop() {
	defer close(h.loopDone)
	defer h.closeShards()
	var resync []string
	handle := func(ev event) {
		switch msg := ev.msg.(type) {
		case *redis.Subscription:
			if cid := h.confirm(ev.sh, msg); cid != "" {
				resync = append(resync, cid)
			}
		case *redis.Message:
			// Re-read rooms before any later message reaches them, so
			// each socket still gets its channel's messages in order.
			if len(resync) > 0 {
				h.resync(resync)
				resync = resync[:0]
			}
			h.fanout(msg)
		case error:
			h.drop(ev.sh, msg)
		}
	}
	for {
		select {
		case <-h.quit:
			return
		case <-h.wake:
			h.reconcile()
		case <-h.retry.C:
			h.retrying = false
			h.reconcile()
		case ev := <-h.events:
			handle(ev)
			// Take what is already waiting too, so that a burst of
			// confirmations (a shard resubscribes its rooms) is re-read
			// in one round trip.
		drain:
			for range 1024 {
				select {
				case ev := <-h.events:
					handle(ev)
				default:
					break drain
				}
			}
			if len(resync) > 0 {
				h.resync(resync)
				resync = resync[:0]
			}
		}
	}
}

// reconcile subscribes new rooms and rooms whose subscription was lost,
// each on its shard, and unsubscribes empty ones.
func (h *Hub) reconcile() {
	var place []*room
	unsub := make(map[*shard][]string)
	h.mu.Lock()
	for cid := range h.dirty {
		r := h.rooms[cid]
		switch {
		case r == nil:
		case len(r.members) == 0:
			delete(h.rooms, cid)
			if r.sh != nil && !r.sh.dropped {
				r.sh.unsubs[cid]++
				unsub[r.sh] = append(unsub[r.sh], h.roomChannel(cid))
			}
		case r.sh == nil:
			if r.state == roomNew {
				r.state = roomSubscribing
			}
			place = append(place, r)
		}
	}
	clear(h.dirty)
	h.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	masters, unknown := h.masters(ctx, place)

	sub := make(map[*shard][]string)
	stale := false
	h.mu.Lock()
	for i, r := range place {
		switch {
		case h.rooms[r.cid] != r || len(r.members) == 0 || r.sh != nil:
			// Emptied meanwhile (and marked dirty again), or placed.
		case masters != nil && masters[i] == nil:
			h.dirty[r.cid] = struct{}{}
		case masters != nil && masters[i].Options().Addr == r.movedFrom && time.Since(r.movedAt) < staleFor:
			// Not there: it would refuse (MOVED), or, now a replica of the
			// slot's new master, take the subscription in its stead.
			h.dirty[r.cid] = struct{}{}
			stale = true
		default:
			var m *redis.Client
			if masters != nil {
				m = masters[i]
			}
			sh := h.shardFor(m)
			r.sh = sh
			r.movedFrom = ""
			sh.pending[r.cid]++
			sub[sh] = append(sub[sh], h.roomChannel(r.cid))
		}
	}
	h.mu.Unlock()
	if unknown != nil {
		h.o.Log.Warn().Err(unknown).Msg("hub: find the masters of rooms' slots; trying again")
	}
	if stale {
		h.reloadSlots()
	}
	if unknown != nil || stale {
		h.retryLater()
	}

	for sh, channels := range unsub {
		if err := h.unsubscribe(ctx, sh, channels); err != nil {
			h.drop(sh, err)
		}
	}
	for sh, channels := range sub {
		if sh.dropped {
			continue
		}
		if err := h.subscribe(ctx, sh, channels); err != nil {
			h.drop(sh, err)
		}
	}
}

// masters finds, on a Cluster, the master that owns each room's slot (nil
// where that failed, with the first error); on a single Redis it returns
// nil.
func (h *Hub) masters(ctx context.Context, rooms []*room) ([]*redis.Client, error) {
	if h.cluster == nil || len(rooms) == 0 {
		return nil, nil
	}
	out := make([]*redis.Client, len(rooms))
	var first error
	for i, r := range rooms {
		c, err := h.cluster.MasterForKey(ctx, h.roomChannel(r.cid))
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		out[i] = c
	}
	return out, first
}

// shardFor returns the shard of master m (of the single Redis when m is
// nil), opening it if there is none. Under mu.
func (h *Hub) shardFor(m *redis.Client) *shard {
	addr := ""
	if m != nil {
		addr = m.Options().Addr
	}
	if sh := h.shards[addr]; sh != nil {
		return sh
	}
	sh := &shard{addr: addr, done: make(chan struct{}),
		pending: make(map[string]int), unsubs: make(map[string]int)}
	// Neither connects yet: the first subscribe (or the reader) does.
	if m != nil {
		sh.ps = m.SSubscribe(context.Background())
	} else {
		sh.ps = h.rdb.Subscribe(context.Background())
	}
	h.shards[addr] = sh
	go h.read(sh)
	return sh
}

// subscribe sends the subscriptions of channels: on a Cluster one
// SSUBSCRIBE per channel (one may not span slots), else one SUBSCRIBE.
// An error means the connection failed.
func (h *Hub) subscribe(ctx context.Context, sh *shard, channels []string) error {
	if h.cluster == nil {
		return sh.ps.Subscribe(ctx, channels...)
	}
	for _, ch := range channels {
		if err := sh.ps.SSubscribe(ctx, ch); err != nil {
			return err
		}
	}
	return nil
}

func (h *Hub) unsubscribe(ctx context.Context, sh *shard, channels []string) error {
	if h.cluster == nil {
		return sh.ps.Unsubscribe(ctx, channels...)
	}
	for _, ch := range channels {
		if err := sh.ps.SUnsubscribe(ctx, ch); err != nil {
			return err
		}
	}
	return nil
}

// read hands the loop what a shard's connection receives. It PINGs a
// silent connection, and stops at the first error, having handed it on:
// the loop then drops the shard. (It never lets the PubSub reconnect by
// itself: see shard.)
func (h *Hub) read(sh *shard) {
	ctx := context.Background()
	pinged := false
	for {
		msg, err := sh.ps.ReceiveTimeout(ctx, pingInterval)
		var ne net.Error
		switch {
		case err == nil:
			pinged = false
			if _, ok := msg.(*redis.Pong); ok {
				continue
			}
		case errors.As(err, &ne) && ne.Timeout() && !pinged:
			pinged = true
			if err := sh.ps.Ping(ctx); err != nil {
				msg = fmt.Errorf("ping: %w", err)
			} else {
				continue
			}
		case errors.As(err, &ne) && ne.Timeout():
			msg = fmt.Errorf("no answer to PING within %v", pingInterval)
		default:
			msg = err
		}
		select {
		case h.events <- event{sh: sh, msg: msg}:
		case <-sh.done:
			return
		case <-h.quit:
			return
		}
		if _, failed := msg.(error); failed {
			return
		}
	}
}

// drop closes a shard whose connection failed (or whose server refused a
// command: MOVED, CLUSTERDOWN) and has its rooms subscribed anew, on
// whichever master owns their slots now; rooms that were live stay live
// and are re-read from history once Redis confirms their new
// subscription (confirm). The loop only.
func (h *Hub) drop(sh *shard, err error) {
	if sh.dropped {
		return
	}
	rooms := 0
	h.mu.Lock()
	sh.dropped = true
	if h.shards[sh.addr] == sh {
		delete(h.shards, sh.addr)
	}
	for cid, r := range h.rooms {
		if r.sh == sh {
			r.sh = nil
			h.dirty[cid] = struct{}{}
			rooms++
		}
	}
	h.mu.Unlock()
	close(sh.done)
	_ = sh.ps.Close()
	h.o.Log.Warn().Err(err).Str("addr", sh.addr).Int("rooms", rooms).Msg("hub: pub/sub connection lost; subscribing its rooms again")
	h.reloadSlots()
	h.retryLater()
}

// reloadSlots has the Cluster client read the slots' owners again (in the
// background): a failover or a slot move has changed them.
func (h *Hub) reloadSlots() {
	if h.cluster != nil {
		h.cluster.ReloadState(context.Background())
	}
}

// retryLater has the loop reconcile again after the backoff, which doubles
// up to maxBackoff until a subscription is confirmed. The loop only.
func (h *Hub) retryLater() {
	if h.retrying {
		return
	}
	h.retrying = true
	h.retry.Reset(h.backoff)
	h.backoff = min(2*h.backoff, maxBackoff)
}

// confirm handles a subscription's confirmation or end. A room waiting for
// its subscriptions goes live; a room already live has been subscribed
// anew (after its shard failed, or a move of its slot) and may have missed
// messages: its channel id is returned, to be re-read from history. An
// unsubscription the loop did not ask for is a Cluster's: the room's slot
// has left that master (a failover, a slot migration), and the room is
// subscribed again on the slot's new master. The loop only.
func (h *Hub) confirm(sh *shard, s *redis.Subscription) (resync string) {
	cid, ok := h.roomOf(s.Channel)
	if !ok || sh.dropped {
		return ""
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[cid]
	switch s.Kind {
	case "subscribe", "ssubscribe":
		if n := sh.pending[cid]; n > 1 {
			sh.pending[cid] = n - 1
		} else {
			delete(sh.pending, cid)
		}
		if r == nil || r.sh != sh {
			return ""
		}
		h.backoff = minBackoff
		switch {
		case r.state == roomSubscribing && sh.pending[cid] == 0:
			r.state = roomLive
			close(r.ready)
		case r.state == roomLive:
			return cid
		}
	case "unsubscribe", "sunsubscribe":
		if n := sh.unsubs[cid]; n > 0 {
			if n > 1 {
				sh.unsubs[cid] = n - 1
			} else {
				delete(sh.unsubs, cid)
			}
			return ""
		}
		if r == nil || r.sh != sh {
			return ""
		}
		h.o.Log.Info().Str("addr", sh.addr).Str("channel_id", cid).Msg("hub: Redis ended a room's subscription (its slot moved); subscribing it again")
		r.sh = nil
		r.movedFrom, r.movedAt = sh.addr, time.Now()
		delete(sh.pending, cid)
		h.dirty[cid] = struct{}{}
		h.reloadSlots()
		h.retryLater()
	}
	return ""
}

// closeShards closes every pub/sub connection; the loop, as it returns.
func (h *Hub) closeShards() {
	h.mu.Lock()
	shards := make([]*shard, 0, len(h.shards))
	for _, sh := range h.shards {
		shards = append(shards, sh)
	}
	clear(h.shards)
	h.mu.Unlock()
	for _, sh := range shards {
		sh.dropped = true
		close(sh.done)
		_ = sh.ps.Close()
	}
}
