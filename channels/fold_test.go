package channels

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
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
	for _, f := range []string{"message", "metadata", "tl"} {
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

// A channel's timeline is its record's field: a channel an earlier version
// began, its entries in the list, reads them first, then the field's; an
// entry written between a fold's read and its write makes the fold wait
// for the next round (nothing of the entry lost), and so does a move to
// the archive.
func TestTimelineListThenRecord(t *testing.T) {
	t.Parallel()
	s, c, _, _ := roomService(t, Options{HotWindow: time.Hour})
	ctx := context.Background()
	task := newTask()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, task.ChannelID, StatusSuccess)
	cid := task.ChannelID
	own, err := s.timeline(ctx, cid)
	if err != nil || len(own) < 3 || !strings.Contains(string(own[0]), `"request"`) {
		t.Fatalf("timeline %s (%v), want the request's entry and the run's", own, err)
	}
	if n, _ := c.Exists(ctx, s.tlKey(cid)).Result(); n != 0 {
		t.Fatal("a new channel wrote a timeline list")
	}
	// As an earlier version left it: the first entry in the list.
	c.RPush(ctx, s.tlKey(cid), `{"at":"2026-01-01T00:00:00.000Z","type":"earlier"}`)
	got, _ := s.timeline(ctx, cid)
	if len(got) != len(own)+1 || !strings.Contains(string(got[0]), "earlier") || string(got[1]) != string(own[0]) {
		t.Fatalf("timeline %s, want the list's entry, then the record's", got)
	}
	tl := c.HGet(ctx, s.chKey(cid), "tl").Val()
	note := `{"at":"2026-01-01T00:00:01.000Z","type":"late"}`
	if err := noteScript.Run(ctx, c, []string{s.chKey(cid), s.tlKey(cid)}, note).Err(); err != nil {
		t.Fatal(err)
	}
	keys := []string{s.chKey(cid), s.tlKey(cid), s.dlKey(cid), s.zKey(cid)}
	if r, _ := foldScript.Run(ctx, c, keys, "{}", 1, 0, time.Hour.Milliseconds(), len(tl)).Text(); r != "moved" {
		t.Errorf("fold of a timeline grown since its read: %q, want moved", r)
	}
	if r, _ := archiveScript.Run(ctx, c, keys, 1, 0, len(tl)).Text(); r != "moved" {
		t.Errorf("move of a timeline grown since its read: %q, want moved", r)
	}
	got, _ = s.timeline(ctx, cid)
	if len(got) != len(own)+2 || !strings.Contains(string(got[len(own)+1]), `"late"`) {
		t.Errorf("timeline %s, want the note last", got)
	}
}

// A record's timeline stops growing at 256 KiB: further notes (refused
// callbacks sent again and again) are counted, not written, since each
// append rewrites the field whole. And a document an earlier version
// archived with the field among the record's other fields reads it as
// the timeline.
func TestTimelineFieldBounds(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{})
	ctx := context.Background()
	cid := newTask().ChannelID
	full := strings.Repeat("x", 262144)
	c.HSet(ctx, s.chKey(cid), "project_id", "p1", "tl", full)
	c.Expire(ctx, s.chKey(cid), time.Minute)
	keys := []string{s.chKey(cid), s.tlKey(cid)}
	if n, err := noteScript.Run(ctx, c, keys, `{"type":"late"}`).Int(); err != nil || n != 0 {
		t.Fatalf("note on a full timeline: %d, %v; want 0", n, err)
	}
	if got := c.HGet(ctx, s.chKey(cid), "tl").Val(); got != full {
		t.Errorf("a full timeline grew to %d bytes", len(got))
	}
	if got := c.HGet(ctx, s.chKey(cid), "tl_dropped").Val(); got != "1" {
		t.Errorf("tl_dropped = %q, want 1", got)
	}
	c.HSet(ctx, s.chKey(cid), "tl", `{"type":"a"}`)
	if n, _ := noteScript.Run(ctx, c, keys, `{"type":"b"}`).Int(); n != 1 {
		t.Error("a note on a short timeline was not written")
	}

	doc, err := packFolded(folded{Timeline: raws([]string{`{"type":"a"}`}), Record: map[string]string{"tl": "{\"type\":\"b\"}\n{\"type\":\"c\"}", "x": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := unpackFolded(doc)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%s", f.Timeline) != `[{"type":"a"} {"type":"b"} {"type":"c"}]` || len(f.Record) != 1 {
		t.Errorf("unpacked timeline %s, record %v", f.Timeline, f.Record)
	}
}
