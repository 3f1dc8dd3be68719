package channels

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// The delivery a request chose reaches the dispatch engine: only its
// endpoints (webhook_id, or every endpoint registered with its
// webhook_url), only the event types it asked for.
func TestRequestDeliveryChoices(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	tests := []struct {
		name        string
		eventDriven bool
		webhookID   string
		webhookIDs  []string
		events      []string
		wantType    string // "" = no webhook
		wantIDs     []string
	}{
		{"every endpoint, every event", false, "", nil, nil, "task.completed", nil},
		{"webhook_id", false, "wh_1", nil, nil, "task.completed", []string{"wh_1"}},
		{"every endpoint of a webhook_url", false, "wh_1", []string{"wh_1", "wh_2"}, nil, "task.completed", []string{"wh_1", "wh_2"}},
		{"events keep task.completed", false, "wh_1", nil, []string{"task.completed"}, "task.completed", []string{"wh_1"}},
		{"events leave task.completed out", false, "wh_1", nil, []string{"task.ai_generated"}, "", nil},
		{"event-driven, every event", true, "", nil, nil, "task.ai_generated", nil},
		{"event-driven, events keep task.ai_generated", true, "wh_3", nil, []string{"task.ai_generated"}, "task.ai_generated", []string{"wh_3"}},
		{"event-driven, events leave task.ai_generated out", true, "", nil, []string{"task.completed"}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: rec, Dispatcher: rec})
			task := newTask()
			if tt.eventDriven {
				task = eventTask()
			}
			task.WebhookID, task.WebhookIDs, task.Events = tt.webhookID, tt.webhookIDs, tt.events
			ctx := context.Background()
			if err := s.Submit(ctx, task); err != nil {
				t.Fatal(err)
			}
			// execute runs the side effects before it returns (the room's
			// publish goes with the lease release, in the ack batcher's next
			// round trip).
			if _, err := s.execute(ctx, task, nil); err != nil {
				t.Fatal(err)
			}
			published := rec.awaitPublished(t)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(published) == 0 {
				t.Fatal("nothing published to the room: the request's choices must not touch it")
			}
			if tt.wantType == "" {
				if len(rec.events) != 0 {
					t.Fatalf("webhook events = %+v, want none", rec.events)
				}
				return
			}
			if len(rec.events) != 1 || rec.events[0].Type != tt.wantType {
				t.Fatalf("webhook events = %+v, want one %s", rec.events, tt.wantType)
			}
			if got := rec.events[0].WebhookIDs; !slices.Equal(got, tt.wantIDs) {
				t.Errorf("endpoints = %q, want %q", got, tt.wantIDs)
			}
		})
	}
}

// metadata is kept on the record, shown with the channel (null without
// it), and in no payload; the request's delivery choices are on the
// timeline's request entry.
func TestMetadataAndDeliveryOnRecord(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	rec := &recorder{}
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: rec, Dispatcher: rec})
	ctx := context.Background()

	task := newTask()
	task.Metadata = json.RawMessage(`{"conversation_id":"c-1","n":[1,2]}`)
	task.WebhookID, task.WebhookIDs = "wh_1", []string{"wh_1", "wh_2"}
	task.Events, task.DeliveryMethod = []string{"task.completed"}, "websocket"
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	v, tl, err := s.Timeline(ctx, "p1", task.ChannelID)
	if err != nil {
		t.Fatal(err)
	}
	if string(v.Metadata) != `{"conversation_id":"c-1","n":[1,2]}` {
		t.Errorf("view metadata = %s", v.Metadata)
	}
	var req Entry
	if len(tl) == 0 || json.Unmarshal(tl[0], &req) != nil || req.Type != "request" {
		t.Fatalf("timeline = %s", tl)
	}
	if !slices.Equal(req.WebhookIDs, []string{"wh_1", "wh_2"}) || !slices.Equal(req.Events, []string{"task.completed"}) || req.DeliveryMethod != "websocket" {
		t.Errorf("request entry = %s", tl[0])
	}
	msg, err := s.execute(ctx, task, nil)
	if err != nil {
		t.Fatal(err)
	}
	bodies := append([]string{string(msg)}, rec.awaitPublished(t)...)
	rec.mu.Lock()
	for _, ev := range rec.events {
		bodies = append(bodies, string(ev.Body))
	}
	rec.mu.Unlock()
	for _, b := range bodies {
		if strings.Contains(b, "conversation_id") || strings.Contains(b, `"metadata"`) {
			t.Errorf("a payload carries the metadata: %s", b)
		}
	}
	if v, err = s.Get(ctx, "p1", task.ChannelID); err != nil || string(v.Metadata) != `{"conversation_id":"c-1","n":[1,2]}` {
		t.Errorf("metadata after completion = %s (%v)", v.Metadata, err)
	}

	plain := newTask()
	if err := s.Submit(ctx, plain); err != nil {
		t.Fatal(err)
	}
	v, tl, err = s.Timeline(ctx, "p1", plain.ChannelID)
	if err != nil || string(v.Metadata) != "null" {
		t.Errorf("metadata without one = %s (%v)", v.Metadata, err)
	}
	if raw, _ := json.Marshal(v); !strings.Contains(string(raw), `"metadata":null`) {
		t.Errorf("view = %s", raw)
	}
	if len(tl) == 0 || strings.Contains(string(tl[0]), "webhook_ids") || strings.Contains(string(tl[0]), "delivery_method") {
		t.Errorf("request entry without choices = %s", tl)
	}
}
