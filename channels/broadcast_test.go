package channels

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// send publishes msg n times in one pipeline, with its entries, as the
// callback paths do.
func send(t *testing.T, s *Service, task *Task, msg []byte, n int) {
	t.Helper()
	b := broadcasts{s: s}
	if err := s.pipelined(context.Background(), func(p redis.Pipeliner) {
		for range n {
			b.add(context.Background(), p, task.ProjectID, task.ChannelID, StatusCompleted, msg)
		}
	}); err != nil {
		t.Fatal(err)
	}
	b.check()
}

// broadcastChannel is a submitted task's channel on a service with a real
// hub, and the final message the tests send its room.
func broadcastChannel(t *testing.T) (*Service, *hub.Hub, *Task, []byte) {
	t.Helper()
	c, prefix := rdbtest.New(t)
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: h})
	task := newTask()
	if err := s.Submit(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	return s, h, task, []byte(`{"status":"completed","channel_id":"` + task.ChannelID + `"}`)
}

// wantBroadcasts fails unless the channel's timeline holds n broadcast
// entries.
func wantBroadcasts(t *testing.T, s *Service, task *Task, n int) {
	t.Helper()
	_, tl, err := s.Timeline(context.Background(), task.ProjectID, task.ChannelID)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(strings.Join(timelineTypes(t, tl), ","), "broadcast"); got != n {
		t.Fatalf("%d broadcast entries, want %d: %s", got, n, tl)
	}
}

// A publish sent again (side effects redone after a crash, or twice in one
// pipeline) reaches the room once and is logged on the timeline once
// (broadcast.lua: once per status).
func TestBroadcastLoggedOnceWhenSentAgain(t *testing.T) {
	t.Parallel()
	s, _, task, msg := broadcastChannel(t)
	send(t, s, task, msg, 1)
	send(t, s, task, msg, 2)
	wantBroadcasts(t, s, task, 1)
	if hist, _ := s.rdb.LLen(context.Background(), s.o.Prefix+":ch:{"+task.ChannelID+"}:hist").Result(); hist != 1 {
		t.Fatalf("the room's history holds %d messages, want 1", hist)
	}
}

// A message that reached the room in a round trip whose timeline entry was
// lost (the connection dropped mid-pipeline, the node died) is logged when
// the side effects are redone, though the room drops it as a repeat.
func TestBroadcastMissingEntryLoggedOnRedo(t *testing.T) {
	t.Parallel()
	s, h, task, msg := broadcastChannel(t)
	ctx := context.Background()
	p := s.rdb.Pipeline()
	seq := h.PublishIn(ctx, p, task.ProjectID, task.ChannelID, msg) // the publish alone, no entry
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := seq(); err != nil || n != 1 {
		t.Fatalf("first publish: seq %d, %v", n, err)
	}
	send(t, s, task, msg, 1)
	send(t, s, task, msg, 1)
	wantBroadcasts(t, s, task, 1)
}
