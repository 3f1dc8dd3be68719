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

// A publish sent again (side effects redone after a crash)
// reaches the room once and is logged on the timeline once: channels logs
// what the room reports as new.
func TestBroadcastLoggedOnceWhenSentAgain(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: h})
	task := newTask()
	ctx := context.Background()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	msg := []byte(`{"status":"completed","channel_id":"` + task.ChannelID + `"}`)
	send(t, s, task, msg, 1)
	send(t, s, task, msg, 2)
	_, tl, err := s.Timeline(ctx, task.ProjectID, task.ChannelID)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range tl {
		if strings.Contains(string(e), `"type":"broadcast"`) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d broadcast entries, want 1: %s", n, tl)
	}
	if hist, _ := c.LLen(ctx, prefix+":ch:{"+task.ChannelID+"}:hist").Result(); hist != 1 {
		t.Fatalf("the room's history holds %d messages, want 1", hist)
	}
}

// A message that reached the room in a round trip whose timeline entry was
// lost (the connection dropped mid-pipeline, the node died) is logged when
// the side effects are redone, though the room drops it as a repeat.
func TestBroadcastMissingEntryLoggedOnRedo(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: h})
	task := newTask()
	ctx := context.Background()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	msg := []byte(`{"status":"completed","channel_id":"` + task.ChannelID + `"}`)
	p := c.Pipeline()
	seq := h.PublishIn(ctx, p, task.ProjectID, task.ChannelID, msg) // the publish alone, no entry
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := seq(); err != nil || n != 1 {
		t.Fatalf("first publish: seq %d, %v", n, err)
	}
	send(t, s, task, msg, 1)
	send(t, s, task, msg, 1)
	_, tl, err := s.Timeline(ctx, task.ProjectID, task.ChannelID)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range tl {
		if strings.Contains(string(e), `"type":"broadcast"`) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d broadcast entries, want 1: %s", n, tl)
	}
}
