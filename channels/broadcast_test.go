package channels

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// A publish sent again (an ack retried, side effects redone after a crash)
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
	it := ackItem{cid: task.ChannelID, pid: task.ProjectID, member: s.memberOf(task.ProjectID, task.ChannelID),
		msg: []byte(`{"status":"completed","channel_id":"` + task.ChannelID + `"}`), status: StatusCompleted}
	s.sendAcks(ctx, []ackItem{it})
	s.sendAcks(ctx, []ackItem{it, it})
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
	it := ackItem{cid: task.ChannelID, pid: task.ProjectID, member: s.memberOf(task.ProjectID, task.ChannelID),
		msg: msg, status: StatusCompleted}
	s.sendAcks(ctx, []ackItem{it})
	s.sendAcks(ctx, []ackItem{it})
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
