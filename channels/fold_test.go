package channels

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Once its hot window has passed, a settled channel is folded: its final
// message, metadata and timeline move into one compressed document, the
// record keeps small fields only, and the channel API, the timeline and a
// late join answer exactly as before.
func TestSettledChannelsAreFolded(t *testing.T) {
	t.Parallel()
	s, c, _, _ := roomService(t, Options{HotWindow: 300 * time.Millisecond})
	ctx := context.Background()
	task := newTask()
	task.Metadata = json.RawMessage(`{"order":42}`)
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, task.ChannelID, StatusSuccess)
	view, tl, err := s.Timeline(ctx, "p1", task.ChannelID)
	if err != nil {
		t.Fatal(err)
	}
	until(t, "folded", func() bool { return c.Exists(ctx, s.zKey(task.ChannelID)).Val() == 1 })
	fields, _ := c.HGetAll(ctx, s.chKey(task.ChannelID)).Result()
	for _, f := range []string{"message", "metadata"} {
		if _, ok := fields[f]; ok {
			t.Errorf("field %s kept after the fold", f)
		}
	}
	if n, _ := c.Exists(ctx, s.tlKey(task.ChannelID)).Result(); n != 0 {
		t.Error("the timeline list is kept after the fold")
	}
	// (A real Redis: the in-process one used without REDIS_URL has no OBJECT ENCODING.)
	if enc, err := c.Do(ctx, "OBJECT", "ENCODING", s.chKey(task.ChannelID)).Text(); err == nil && enc != "listpack" && enc != "ziplist" {
		t.Errorf("record encoding %s (%v), want listpack", enc, err)
	}
	view2, tl2, err := s.Timeline(ctx, "p1", task.ChannelID)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(view2) != fmt.Sprint(view) || fmt.Sprintf("%s", tl2) != fmt.Sprintf("%s", tl) {
		t.Errorf("after the fold:\n%+v\n%s\nbefore:\n%+v\n%s", view2, tl2, view, tl)
	}
	seq, msg, err := s.FinalMessage(ctx, task.ChannelID)
	if err != nil || string(msg) != string(view.Message) || seq == "" {
		t.Errorf("FinalMessage = %s, %s, %v; want a seq and %s", seq, msg, err, view.Message)
	}
	// An entry written after the fold (a late callback refused) is read
	// after the document's.
	if code := conflictCode(s.Callback(ctx, "p1", task.ChannelID, success(`{"x":1}`))); code == "" {
		t.Fatal("a callback on a standard channel was accepted")
	}
	_, tl3, _ := s.Timeline(ctx, "p1", task.ChannelID)
	if len(tl3) != len(tl)+1 || !strings.Contains(string(tl3[len(tl)]), "callback_rejected") {
		t.Errorf("timeline after a late callback: %s", tl3)
	}
}
