package channels

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/internal/wire"
)

func TestMergeTimeline(t *testing.T) {
	e := func(at, ty string) json.RawMessage { return json.RawMessage(`{"at":"` + at + `","type":"` + ty + `"}`) }
	const t1, t2, t3, t4 = "2026-03-01T10:00:00.001Z", "2026-03-01T10:00:00.002Z", "2026-03-01T10:00:01.000Z", "2026-03-01T10:00:02.500Z"
	tests := []struct {
		name       string
		own, deliv []json.RawMessage
		want       string // types, in order
	}{
		{"no deliveries", []json.RawMessage{e(t1, "request"), e(t2, "completed")}, nil, "request,completed"},
		{"no own entries", nil, []json.RawMessage{e(t1, "delivery_attempt")}, "delivery_attempt"},
		{"interleaved", []json.RawMessage{e(t1, "request"), e(t3, "completed"), e(t4, "broadcast")},
			[]json.RawMessage{e(t2, "delivery_attempt"), e(t4, "dead_lettered")}, "request,delivery_attempt,completed,broadcast,dead_lettered"},
		{"ties: the channel's first", []json.RawMessage{e(t2, "completed")}, []json.RawMessage{e(t2, "delivery_attempt")}, "completed,delivery_attempt"},
		{"each list keeps its order", []json.RawMessage{e(t3, "completed"), e(t1, "broadcast")},
			[]json.RawMessage{e(t2, "delivery_resumed"), e(t2, "delivery_attempt")}, "delivery_resumed,delivery_attempt,completed,broadcast"},
		// A timeline from before the engine kept its own log: its
		// entries are among the channel's, new ones come from the log.
		{"upgraded", []json.RawMessage{e(t1, "completed"), e(t2, "delivery_attempt")},
			[]json.RawMessage{e(t3, "delivery_attempt"), e(t4, "dead_lettered")}, "completed,delivery_attempt,delivery_attempt,dead_lettered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(timelineTypes(t, mergeTimeline(tt.own, tt.deliv)), ","); got != tt.want {
				t.Errorf("merged = %s, want %s", got, tt.want)
			}
		})
	}
}

// Timeline shows the dispatcher's log of the channel among its own
// entries, by time.
func TestTimelineMergesDeliveries(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	rec := &recorder{}
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: rec, Dispatcher: rec})
	ctx := context.Background()
	task := newTask()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	if _, err := s.execute(ctx, task, nil); err != nil {
		t.Fatal(err)
	}
	// The broadcast entry is logged after the ack batch's round trip.
	var own []json.RawMessage
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		_, tl, err := s.Timeline(ctx, "p1", task.ChannelID)
		if err != nil {
			t.Fatal(err)
		}
		own = tl
		if slices.Contains(timelineTypes(t, own), "broadcast") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no broadcast entry 5 s after the task finished: %s", own)
		}
	}
	if len(own) < 2 {
		t.Fatalf("timeline = %s, want at least request and completed", own)
	}
	// One delivery entry just after the request, one after everything.
	after := func(raw json.RawMessage, d time.Duration) string {
		at, err := time.Parse(wire.TimeFormat, entryAt(raw))
		if err != nil {
			t.Fatal(err)
		}
		return at.Add(d).UTC().Format(wire.TimeFormat)
	}
	early := after(own[0], 0) // a tie with the request: after it
	late := after(own[len(own)-1], time.Hour)
	rec.mu.Lock()
	rec.logs = map[string][]json.RawMessage{task.ChannelID: {
		json.RawMessage(`{"at":"` + early + `","type":"delivery_attempt"}`),
		json.RawMessage(`{"at":"` + late + `","type":"dead_lettered"}`),
	}}
	rec.mu.Unlock()
	_, tl, err := s.Timeline(ctx, "p1", task.ChannelID)
	if err != nil {
		t.Fatal(err)
	}
	// The attempt comes after every own entry of its time or earlier.
	pos := 0
	for pos < len(own) && entryAt(own[pos]) <= early {
		pos++
	}
	types := timelineTypes(t, tl)
	if len(tl) != len(own)+2 || types[0] != "request" || types[pos] != "delivery_attempt" || types[len(types)-1] != "dead_lettered" {
		t.Errorf("timeline = %v, want the attempt at %d and the dead letter last", types, pos)
	}
}

func timelineTypes(tb testing.TB, tl []json.RawMessage) []string {
	tb.Helper()
	out := make([]string, len(tl))
	for i, raw := range tl {
		var e struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			tb.Fatalf("entry %s: %v", raw, err)
		}
		out[i] = e.Type
	}
	return out
}
