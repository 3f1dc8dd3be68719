package channels

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/project"
)

// The request log lists a project's channels newest first, filtered by
// workflow, event name, status and time, page by page with nothing lost or
// repeated, and never another project's.
func TestLogsFiltersAndPages(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	ok := answer(`{"a":1}`)
	runner := runnerFunc(func(ctx context.Context, req ai.Request) (ai.Result, error) {
		if req.SystemPrompt == "fail" {
			return ai.Result{}, errors.New("provider down")
		}
		return ok(ctx, req)
	})
	s := newService(t, c, prefix, runner, Options{Publisher: h})
	ctx := context.Background()
	type made struct {
		cid, workflow, event string
		status               Status
	}
	var all []made
	for i := range 40 {
		t := newTask()
		t.Workflow.Name = fmt.Sprintf("wf%d", i%2)
		want := StatusSuccess
		if i%4 == 3 {
			t.Workflow.EventName = "ev"
			want = StatusAIGenerated
		}
		if i%5 == 0 {
			t.Workflow.SystemPrompt = "fail"
			want = StatusError
		}
		if err := s.Submit(ctx, t); err != nil {
			panic(err)
		}
		all = append(all, made{t.ChannelID, t.Workflow.Name, t.Workflow.EventName, want})
		time.Sleep(2 * time.Millisecond) // distinct creation times, mostly
	}
	other := newTask()
	other.ProjectID = "p2"
	if err := s.Submit(ctx, other); err != nil {
		t.Fatal(err)
	}
	s.Start()
	for _, m := range all {
		waitStatus(t, s, m.cid, m.status)
	}
	// The status indexes move in the batched acks, right after.
	time.Sleep(100 * time.Millisecond)
	list := func(f LogFilter, limit int) []LogItem {
		t.Helper()
		var out []LogItem
		cursor := ""
		for pages := 0; ; pages++ {
			page, err := s.Logs(ctx, "p1", f, project.ListParams{Limit: limit, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, page.Items...)
			if page.NextCursor == nil {
				return out
			}
			if pages > 100 {
				t.Fatal("paging does not end")
			}
			cursor = *page.NextCursor
		}
	}
	expect := func(name string, f LogFilter, keep func(made) bool) {
		t.Helper()
		var want []string
		for i := len(all) - 1; i >= 0; i-- {
			if keep(all[i]) {
				want = append(want, all[i].cid)
			}
		}
		for _, limit := range []int{1, 3, 50} {
			got := list(f, limit)
			var ids []string
			for _, it := range got {
				ids = append(ids, it.ChannelID)
			}
			if fmt.Sprint(ids) != fmt.Sprint(want) {
				t.Errorf("%s (limit %d): got %d channels %v,\nwant %d %v", name, limit, len(ids), ids, len(want), want)
			}
		}
	}
	expect("all", LogFilter{}, func(made) bool { return true })
	expect("workflow", LogFilter{Workflow: "wf1"}, func(m made) bool { return m.workflow == "wf1" })
	expect("event", LogFilter{EventName: "ev"}, func(m made) bool { return m.event == "ev" })
	expect("status", LogFilter{Status: StatusAIGenerated}, func(m made) bool { return m.status == StatusAIGenerated })
	expect("error", LogFilter{Status: StatusError}, func(m made) bool { return m.status == StatusError })
	expect("workflow+status", LogFilter{Workflow: "wf1", Status: StatusSuccess},
		func(m made) bool { return m.workflow == "wf1" && m.status == StatusSuccess })
	expect("nothing", LogFilter{Workflow: "wf0", EventName: "nope"}, func(made) bool { return false })
	// A time range: the middle channels by creation.
	from, to := createdMS(all[10].cid, time.Now()), createdMS(all[29].cid, time.Now())
	expect("range", LogFilter{From: time.UnixMilli(from), To: time.UnixMilli(to)}, func(m made) bool {
		ms := createdMS(m.cid, time.Now())
		return ms >= from && ms <= to
	})
	if page, _ := s.Logs(ctx, "p2", LogFilter{}, project.ListParams{}); len(page.Items) != 1 || page.Items[0].ChannelID != other.ChannelID {
		t.Errorf("project p2 sees %+v", page.Items)
	}
	if _, err := s.Logs(ctx, "p1", LogFilter{Status: "done"}, project.ListParams{}); err == nil {
		t.Error("an unknown status was accepted")
	}
	if _, err := s.Logs(ctx, "p1", LogFilter{}, project.ListParams{Cursor: "garbage!"}); err == nil {
		t.Error("a garbage cursor was accepted")
	}
	// An expired channel drops out of the list.
	c.Del(ctx, s.chKey(all[0].cid))
	if got := list(LogFilter{}, 50); len(got) != len(all)-1 {
		t.Errorf("after one channel expired: %d listed, want %d", len(got), len(all)-1)
	}
}

// Every request-log index key expires, also when a node skips setting the
// expiry again (it does so at most once a minute per key) and when an
// active-state index is emptied as its channels finish and is created
// again by the next one.
func TestLogIndexesAlwaysExpire(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{Retention: time.Hour})
	ctx := context.Background()
	s.Start()
	var keys []string
	for i := range 3 {
		task := newTask()
		task.Workflow.EventName = ""
		if i == 2 {
			s.StopClaiming() // the last one stays active
		}
		if err := s.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			waitStatus(t, s, task.ChannelID, StatusSuccess) // its active indexes are emptied
		}
		keys = append(s.newKeys(task, StatusPending), s.stateKeys(task.logRef(), StatusSuccess)...)
	}
	for _, k := range keys {
		ttl, err := c.TTL(ctx, k).Result()
		if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
			t.Errorf("TTL of %s = %v (%v), want the 1h retention", k, ttl, err)
		}
	}
}

// A refused submission takes its channel out of the indexes, which may
// delete them (a project's first channel); the next one writes them again
// with their expiry, although the node set it less than a minute before.
func TestLogIndexesExpireAfterARefusal(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{MaxQueue: 1, Retention: time.Hour})
	ctx := context.Background()
	first := newTask()
	if err := s.Submit(ctx, first); err != nil {
		t.Fatal(err)
	}
	refused := newTask()
	refused.ProjectID = "p9"
	if err := s.Submit(ctx, refused); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("submit into a full queue: %v", err)
	}
	s.Start()
	waitStatus(t, s, first.ChannelID, StatusSuccess)
	again := newTask()
	again.ProjectID = "p9"
	s.StopClaiming()
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := s.Submit(ctx, again)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrQueueFull) || time.Now().After(end) {
			t.Fatalf("submit after the queue emptied: %v", err)
		}
	}
	for _, k := range s.newKeys(again, StatusPending) {
		ttl, err := c.TTL(ctx, k).Result()
		if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
			t.Errorf("TTL of %s = %v (%v), want the 1h retention", k, ttl, err)
		}
	}
}

func TestExpiriesThrottle(t *testing.T) {
	var e expiries
	now := time.Now()
	if !e.due("k", now, 7*24*time.Hour) {
		t.Fatal("first write: expiry not due")
	}
	if e.due("k", now.Add(59*time.Second), 7*24*time.Hour) {
		t.Error("due again within the minute")
	}
	if !e.due("k", now.Add(time.Minute), 7*24*time.Hour) {
		t.Error("not due after a minute")
	}
	if !e.due("k2", now, 7*24*time.Hour) {
		t.Error("another key's expiry not due")
	}
	e.reset()
	if !e.due("k", now.Add(61*time.Second), 7*24*time.Hour) {
		t.Error("not due after a reset")
	}
	if !e.due("k3", now, 100*time.Second) || e.due("k3", now.Add(999*time.Millisecond), 100*time.Second) || !e.due("k3", now.Add(time.Second), 100*time.Second) {
		t.Error("a short retention: want once a second")
	}
	// A submission asks without noting, and notes once Redis has written.
	if !e.owed("k4", now) || !e.owed("k4", now) {
		t.Error("owed noted the expiry as set")
	}
	e.set("k4", now, 7*24*time.Hour)
	if e.owed("k4", now.Add(59*time.Second)) || !e.owed("k4", now.Add(time.Minute)) {
		t.Error("set: want the expiry owed again a minute later, not before")
	}
}
